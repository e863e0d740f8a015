//! A small SVG chart of the comparison, written by hand so that the
//! benchmark needs no plotting library.

use std::fmt::Write;

const COLORS: [&str; 3] = ["#2f6f4e", "#e6522c", "#6b4fbb"];
const PANEL_W: f64 = 300.0;
const PANEL_H: f64 = 230.0;

/// One bar chart: a title and a value per system (None = not measured).
pub struct Panel {
    pub title: String,
    pub values: Vec<Option<f64>>,
    pub unit: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}K", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders panels in a grid with a legend of `systems`.
pub fn render(title: &str, systems: &[&str], panels: &[Panel]) -> String {
    let cols = 3usize;
    let rows = panels.len().div_ceil(cols);
    let width = PANEL_W * cols as f64 + 40.0;
    let height = PANEL_H * rows as f64 + 90.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="20" y="28" font-size="18" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for (i, name) in systems.iter().enumerate() {
        let x = 20.0 + i as f64 * 160.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="44" width="14" height="14" fill="{}"/><text x="{}" y="56">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 20.0,
            esc(name)
        );
    }
    for (pi, p) in panels.iter().enumerate() {
        let ox = 20.0 + (pi % cols) as f64 * PANEL_W;
        let oy = 75.0 + (pi / cols) as f64 * PANEL_H;
        let _ = write!(s, r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#, ox, oy + 14.0, esc(&p.title));
        let max = p.values.iter().flatten().copied().fold(0.0f64, f64::max).max(1e-12);
        let plot_h = PANEL_H - 70.0;
        let bar_w = (PANEL_W - 60.0) / p.values.len().max(1) as f64;
        let base = oy + 24.0 + plot_h;
        let _ = write!(s, r##"<line x1="{ox}" y1="{base}" x2="{}" y2="{base}" stroke="#999"/>"##, ox + PANEL_W - 40.0);
        for (i, v) in p.values.iter().enumerate() {
            let x = ox + 10.0 + i as f64 * bar_w;
            match v {
                Some(v) => {
                    // Headroom above the tallest bar for its label.
                    let h = (v / max * plot_h * 0.85).max(1.0);
                    let _ = write!(
                        s,
                        r#"<rect x="{x}" y="{}" width="{}" height="{h}" fill="{}"/><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                        base - h,
                        bar_w * 0.8,
                        COLORS[i % COLORS.len()],
                        x + bar_w * 0.4,
                        base - h - 4.0,
                        fmt_num(*v)
                    );
                }
                None => {
                    let _ = write!(
                        s,
                        r##"<text x="{}" y="{}" text-anchor="middle" fill="#999">n/a</text>"##,
                        x + bar_w * 0.4,
                        base - 4.0
                    );
                }
            }
        }
        let _ = write!(s, r##"<text x="{ox}" y="{}" fill="#666">{}</text>"##, base + 16.0, esc(&p.unit));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars_and_missing_values() {
        let svg =
            render("t", &["a", "b"], &[Panel { title: "x".into(), values: vec![Some(2.0), None], unit: "u".into() }]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("n/a"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
