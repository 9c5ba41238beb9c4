//! Inline SVG bar charts drawn in Rust: `currentColor` fills, so the page's theme colours them, and
//! no script. Every chart is paired on the page with a table of the same numbers.

use std::fmt::Write as _;

use super::format::escape;

const W: i64 = 720;
const H: i64 = 200;
const PAD_BOTTOM: i64 = 24;
const PAD_TOP: i64 = 16;

/// A bar chart of `values` (non-negative) labelled by `labels` (`title` per bar for hover text);
/// bar heights are proportional to the values, the tallest fills the plot.
pub fn bars(aria_label: &str, labels: &[String], titles: &[String], values: &[i64]) -> String {
    let n = i64::try_from(values.len()).unwrap_or(0).max(1);
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let plot = H - PAD_BOTTOM - PAD_TOP;
    let slot = W / n;
    let bar = (slot * 7 / 10).max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(aria_label)
    );
    let _ = write!(out, r#"<line x1="0" y1="{y}" x2="{W}" y2="{y}" stroke="currentColor" stroke-opacity="0.4"/>"#, y = H - PAD_BOTTOM);
    let every = (values.len() / 10).max(1);
    for (i, v) in values.iter().enumerate() {
        let i64i = i64::try_from(i).unwrap_or(0);
        let h = if *v <= 0 { 0 } else { ((i128::from(*v) * i128::from(plot)) / i128::from(max)).max(1) as i64 };
        let x = i64i * slot + (slot - bar) / 2;
        let y = H - PAD_BOTTOM - h;
        let title = titles.get(i).map(String::as_str).unwrap_or("");
        let _ = write!(
            out,
            r#"<rect class="bar" x="{x}" y="{y}" width="{bar}" height="{h}" fill="currentColor"><title>{}</title></rect>"#,
            escape(title)
        );
        if i % every == 0 {
            if let Some(l) = labels.get(i) {
                let _ = write!(
                    out,
                    r#"<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="currentColor">{}</text>"#,
                    x + bar / 2,
                    H - 8,
                    escape(l)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_are_proportional_and_text_escaped() {
        let svg = bars("<x>", &["a".into(), "<b>".into()], &["1".into(), "2".into()], &[80, 160]);
        assert!(svg.contains(r#"height="80""#), "{svg}");
        assert!(svg.contains(r#"height="160""#), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains(r#"aria-label="&lt;x&gt;""#));
        let empty = bars("e", &[], &[], &[]);
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>"));
        let zero = bars("z", &["d".into()], &["0".into()], &[0]);
        assert!(zero.contains(r#"height="0""#));
    }
}
