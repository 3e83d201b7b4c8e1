//! A table's tag values, stored once per column, and tag columns built from series ids: a
//! buffered row holds its series id, and its tags come from the series.

use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
use arrow::datatypes::Int32Type;
use sluice_model::Symbols;

#[derive(Default)]
pub(super) struct TagValues {
    pub(super) values: Symbols,
    /// The values as an Arrow array, rebuilt when values were added since.
    array: Option<ArrayRef>,
}

impl TagValues {
    pub(super) fn array(&mut self) -> ArrayRef {
        match &self.array {
            Some(a) if a.len() == self.values.len() => a.clone(),
            _ => {
                let a: ArrayRef = Arc::new(StringArray::from_iter_values(self.values.iter()));
                self.array = Some(a.clone());
                a
            }
        }
    }
}

/// Builds tag columns for the rows of a partition from their series ids.
pub(super) struct TagLookup<'a> {
    pub(super) tag_values: &'a mut [TagValues],
    pub(super) series_tags: &'a [Arc<[(u32, u32)]>],
}

impl TagLookup<'_> {
    pub(super) fn tag_column(&mut self, column: usize, series: &[u32]) -> ArrayRef {
        let values = match self.tag_values.get_mut(column) {
            Some(v) => v.array(),
            None => Arc::new(StringArray::from(Vec::<&str>::new())),
        };
        // value id of this tag per series, computed once per series rather than per row
        let per_series: Vec<Option<i32>> = self
            .series_tags
            .iter()
            .map(|tags| {
                tags.binary_search_by_key(&(column as u32), |(c, _)| *c)
                    .ok()
                    .map(|i| tags[i].1 as i32)
            })
            .collect();
        let keys: Int32Array = series.iter().map(|&s| per_series[s as usize]).collect();
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, values)
                .expect("keys index the column's values"),
        )
    }
}
