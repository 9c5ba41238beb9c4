//! Anthropic-shaped model pages and their pagination.

use serde_json::{json, Value};

use super::*;

fn entries() -> Vec<ModelEntry> {
    [("claude-a", 300), ("claude-b", 200), ("claude-c", 100), ("claude-d", 100), ("claude-e", 0)]
        .iter()
        .map(|(id, created)| ModelEntry { id: (*id).to_owned(), created: *created, display_name: None })
        .collect()
}

fn ids(page: &wire::ModelList) -> Vec<&str> {
    page.data.iter().map(|m| m.id.as_str()).collect()
}

#[test]
fn page_shape() {
    let mut list = entries();
    list[0].display_name = Some("Claude A".to_owned());
    list[0].created = 1_759_104_000;
    let body: Value = serde_json::from_slice(&encode_models_page(&list[..1], &ModelsQuery::default())).unwrap();
    assert_eq!(
        body,
        json!({"data": [{"type": "model", "id": "claude-a", "display_name": "Claude A", "created_at": "2025-09-29T00:00:00Z"}],
               "has_more": false, "first_id": "claude-a", "last_id": "claude-a"})
    );
    let empty: Value = serde_json::from_slice(&encode_models_page(&[], &ModelsQuery::default())).unwrap();
    assert_eq!(empty, json!({"data": [], "has_more": false, "first_id": null, "last_id": null}));
}

#[test]
fn newest_first_and_pagination() {
    let list = entries();
    let q = |s: &str| ModelsQuery::parse(s).unwrap();
    let page = models_page(&list, &q("limit=2&beta=true"));
    assert_eq!(ids(&page), ["claude-a", "claude-b"]);
    assert!(page.has_more);
    let page = models_page(&list, &q("limit=2&after_id=claude-b"));
    assert_eq!(ids(&page), ["claude-c", "claude-d"]);
    assert!(page.has_more);
    let page = models_page(&list, &q("limit=2&after_id=claude-d"));
    assert_eq!(ids(&page), ["claude-e"]);
    assert!(!page.has_more);
    let page = models_page(&list, &q("limit=2&before_id=claude-d"));
    assert_eq!(ids(&page), ["claude-b", "claude-c"]);
    assert!(page.has_more);
    let page = models_page(&list, &q("limit=5&before_id=claude-b"));
    assert_eq!(ids(&page), ["claude-a"]);
    assert!(!page.has_more);
    assert!(models_page(&list, &q("after_id=nope")).data.is_empty());
    assert_eq!(ids(&models_page(&list, &q("limit=1000"))).len(), 5);
    assert_eq!(models_page(&list, &q("after_id=claude%2Da&limit=1")).data[0].id, "claude-b");
    assert_eq!(page.data[0].created_at, "1970-01-01T00:05:00Z");
}

#[test]
fn walking_all_pages_visits_every_model_once() {
    let list = entries();
    for limit in 1..=6 {
        let mut seen = Vec::new();
        let mut query = ModelsQuery { limit, ..ModelsQuery::default() };
        loop {
            let page = models_page(&list, &query);
            seen.extend(page.data.iter().map(|m| m.id.clone()));
            if !page.has_more {
                break;
            }
            query.after_id = page.last_id.clone();
        }
        assert_eq!(seen, ["claude-a", "claude-b", "claude-c", "claude-d", "claude-e"], "limit {limit}");
    }
}

#[test]
fn bad_limits() {
    for bad in ["limit=0", "limit=1001", "limit=x", "limit="] {
        assert_eq!(ModelsQuery::parse(bad).unwrap_err().param(), Some("limit"), "{bad}");
    }
}
