//! What mapping keeps from one request to the next: the tags of each resource-and-scope and
//! of each attribute set under it, by their bytes.

use prost::Message;
use sluice_model::TagSetId;
use sluice_proto::otlp::{InstrumentationScope, KeyValue, Resource};

use super::labels::value_string;
use super::options::Options;
use crate::otlp::names::label_name;
use crate::protowire::{WireError, invalid};

/// Bytes of keys and tags a [`Cache`] holds before it starts over.
pub const CACHE_BUDGET: usize = 32 << 20;

pub(super) type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;
pub(super) type BytesHashMap<V> = HashMap<Box<[u8]>, V>;

/// What mapping keeps from one request to the next: the tags of each resource-and-scope it
/// has seen, and of each attribute set under them, by their bytes. An SDK or a Collector sends
/// the same resources and attribute sets in every export, so a request decodes and names only
/// what is new. The server keeps one per mapping in progress at once. Past
/// [`CACHE_BUDGET`] bytes, or when the options change, it starts over.
#[derive(Default)]
pub struct Cache {
    /// Context key (resource and scope bytes, see `Mapper::context`) -> index in `contexts`.
    pub(super) index: BytesHashMap<u32>,
    pub(super) contexts: Vec<Context>,
    /// Every tag key and value the cached tags use, once: tags are held as positions here, so
    /// that a request interns each distinct string once however many sets share it (the
    /// label names, a region, a service name).
    pub(super) strings: Vec<Box<str>>,
    string_ids: HashMap<Box<str>, u32>,
    pub(super) bytes: usize,
    promote: Vec<String>,
}

impl Cache {
    /// The position of `s` in `strings`, added if new.
    fn string_id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.bytes += 2 * s.len() + 48;
        self.strings.push(s.into());
        self.string_ids.insert(s.into(), id);
        id
    }

    /// `tags` as positions in `strings`.
    pub(super) fn tag_ids(&mut self, tags: &[(String, String)]) -> Box<[(u32, u32)]> {
        self.bytes += 8 * tags.len();
        tags.iter()
            .map(|(k, v)| (self.string_id(k), self.string_id(v)))
            .collect()
    }

    /// Starts over if the cache is over budget or was filled under other options.
    pub(super) fn prepare(&mut self, options: &Options) {
        if self.bytes > CACHE_BUDGET || self.promote != options.promote {
            *self = Cache {
                promote: options.promote.clone(),
                ..Cache::default()
            };
        }
    }
}

/// A resource and scope: the tags they give every series under them.
pub(super) struct Context {
    pub(super) resource: ResourceTags,
    /// The resource's series tags, then `otel_scope_name` and `otel_scope_version`.
    pub(super) scope: Vec<(String, String)>,
    /// The tags of the resource's `target_info` row (empty values left out).
    pub(super) info: CachedTags,
    /// Attribute bytes -> the tags of a data point with them (empty values left out).
    pub(super) sets: BytesHashMap<CachedTags>,
}

/// A tag set as the cache keeps it: (key, value) positions in `Cache::strings`, and its id.
pub(super) type CachedTags = (Box<[(u32, u32)]>, TagSetId);

/// What a resource contributes to its series' tags.
pub(super) struct ResourceTags {
    /// `job`, `instance`.
    pub(super) identity: Vec<(String, String)>,
    /// `identity` plus the promoted attributes: every series of the resource carries them.
    pub(super) tags: Vec<(String, String)>,
    /// The attributes for `target_info`: all but the ones `job` and `instance` come from.
    pub(super) info: Vec<(String, String)>,
}

impl ResourceTags {
    fn new(attributes: &[KeyValue], options: &Options) -> Self {
        let get = |key: &str| {
            attributes
                .iter()
                .find(|a| a.key == key)
                .map(|a| value_string(a.value.as_ref()))
                .filter(|v| !v.is_empty())
        };
        let mut identity = Vec::new();
        if let Some(name) = get("service.name") {
            let job = match get("service.namespace") {
                Some(ns) => format!("{ns}/{name}"),
                None => name,
            };
            identity.push(("job".to_string(), job));
        }
        if let Some(instance) = get("service.instance.id") {
            identity.push(("instance".to_string(), instance));
        }
        let mut tags = identity.clone();
        for key in &options.promote {
            if let Some(v) = get(key) {
                tags.push((label_name(key), v));
            }
        }
        let info = attributes
            .iter()
            .filter(|a| {
                !matches!(
                    a.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .map(|a| (label_name(&a.key), value_string(a.value.as_ref())))
            .collect();
        ResourceTags {
            identity,
            tags,
            info,
        }
    }
}

/// The tags of a data point: `scope`'s and its attributes', empty values left out.
/// Attributes whose names become the same label are joined with `;`, as the Collector's
/// translator does.
pub(super) fn point_tags(
    scope: &[(String, String)],
    attributes: &[KeyValue],
) -> Vec<(String, String)> {
    let mut tags = scope.to_vec();
    for a in attributes {
        let name = label_name(&a.key);
        let value = value_string(a.value.as_ref());
        match tags.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => tags.push((name, value)),
        }
    }
    tags.retain(|(_, v)| !v.is_empty());
    tags
}

/// About the bytes `tags` hold.
pub(super) fn tags_bytes(tags: &[(String, String)]) -> usize {
    tags.iter()
        .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
        .sum()
}

/// Resolves a resource and a scope, given the bytes of each occurrence of
/// `ResourceMetrics.resource` and of `ScopeMetrics.scope` (nearly always one each).
pub(super) fn new_context(
    resources: &[&[u8]],
    scopes: &[&[u8]],
    options: &Options,
) -> Result<Context, WireError> {
    let mut resource = Resource::default();
    for b in resources {
        resource.merge(*b).map_err(invalid)?;
    }
    let mut scope = InstrumentationScope::default();
    for b in scopes {
        scope.merge(*b).map_err(invalid)?;
    }
    let resource = ResourceTags::new(&resource.attributes, options);
    let mut scope_tags = resource.tags.clone();
    if !scope.name.is_empty() {
        scope_tags.push(("otel_scope_name".into(), scope.name));
    }
    if !scope.version.is_empty() {
        scope_tags.push(("otel_scope_version".into(), scope.version));
    }
    Ok(Context {
        resource,
        scope: scope_tags,
        info: (Box::default(), TagSetId::next()),
        sets: BytesHashMap::default(),
    })
}
