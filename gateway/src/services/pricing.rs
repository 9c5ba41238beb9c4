//! The price table in effect (built-in prices under the operator's `pricing.yaml`, hot-reloaded),
//! as a listing. Prices are what every caller is charged, so any authenticated principal may read them.

use crate::domain::pricing::{Price, UnpricedPolicy};
use crate::domain::principal::Principal;

use super::state::AppState;

/// One price entry: a provider id or kind, a model name or glob, and its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceEntry {
    /// Provider id (`groq`) or kind (`openai`) the entry is filed under.
    pub provider: String,
    /// Exact model name or glob (`gpt-4o*`).
    pub model: String,
    pub price: Price,
}

/// The price listing and the policy for models it does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceList {
    pub entries: Vec<PriceEntry>,
    pub unpriced: UnpricedPolicy,
}

/// Every price in effect, sorted by provider and model (any authenticated principal).
pub fn list(state: &AppState, _principal: &Principal) -> PriceList {
    let Some(sink) = state.sink.as_ref() else {
        return PriceList { entries: Vec::new(), unpriced: UnpricedPolicy::Refuse };
    };
    let entries = sink
        .pricing_table()
        .map(|t| {
            t.entries().into_iter().map(|(provider, model, price)| PriceEntry { provider, model, price }).collect()
        })
        .unwrap_or_default();
    PriceList { entries, unpriced: sink.unpriced() }
}
