//! ListObjects pages: prefix, delimiter, markers and continuation.

use super::*;

pub(super) fn list_page(
    objects: Vec<ObjectMeta>,
    prefix: &str,
    delimiter: Option<&str>,
    start_after: &str,
    max_keys: usize,
) -> (Vec<Object>, Vec<CommonPrefix>, bool, Option<String>) {
    let mut contents = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut last = None;
    let mut truncated = false;
    for meta in objects.into_iter().filter(|m| m.key.as_str() > start_after) {
        let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            meta.key[prefix.len()..]
                .find(d)
                .map(|i| meta.key[..prefix.len() + i + d.len()].to_string())
        });
        if let Some(cp) = &rolled
            && prefixes.last() == Some(cp)
        {
            continue;
        }
        if contents.len() + prefixes.len() == max_keys {
            truncated = true;
            break;
        }
        match rolled {
            Some(cp) => {
                last = Some(cp.clone());
                prefixes.push(cp);
            }
            None => {
                last = Some(meta.key.clone());
                contents.push(Object {
                    key: Some(meta.key.clone()),
                    size: Some(meta.size as i64),
                    e_tag: Some(etag(&meta)),
                    last_modified: Some(timestamp(meta.last_modified)),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    ..Object::default()
                });
            }
        }
    }
    let prefixes = prefixes
        .into_iter()
        .map(|p| CommonPrefix { prefix: Some(p) })
        .collect();
    (
        contents,
        prefixes,
        truncated,
        if truncated { last } else { None },
    )
}

/// A common prefix ends with the delimiter; resuming after it must skip every key under it.
pub(super) fn resume_after(marker: &str, delimiter: Option<&str>) -> String {
    match delimiter.filter(|d| !d.is_empty()) {
        Some(d) if marker.ends_with(d) => format!("{marker}\u{10FFFF}"),
        _ => marker.to_string(),
    }
}
