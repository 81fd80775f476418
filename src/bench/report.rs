//! The HTML report of a bench run: one self-contained file (inline CSS and SVG, no scripts,
//! no external resources) with the machine and command at the top, bar charts drawn with
//! plotters, and every scenario's table.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::compare::{Line, Verdict};
use super::results::*;
use super::table::{self, Fmt, DASH};

/// Width of the charts in pixels (the page body is 1200 px wide with 20 px padding).
const CHART_WIDTH: u32 = 1160;
/// Height given to one bar (and its gap) in a chart.
const BAR_PITCH: u32 = 26;
/// The models' colors ([`color`]): Tableau 10, then more.
const PALETTE: [(u8, u8, u8); 16] = [
    (0x4e, 0x79, 0xa7),
    (0xf2, 0x8e, 0x2b),
    (0x59, 0xa1, 0x4f),
    (0xb0, 0x7a, 0xa1),
    (0x76, 0xb7, 0xb2),
    (0xed, 0xc9, 0x48),
    (0x9c, 0x75, 0x5f),
    (0xff, 0x9d, 0xa7),
    (0xe1, 0x57, 0x59),
    (0x55, 0x55, 0x55),
    (0x1f, 0x3b, 0x73),
    (0x8c, 0xd1, 0x7d),
    (0xd3, 0x72, 0x95),
    (0x49, 0x98, 0x94),
    (0xbc, 0xbd, 0x22),
    (0x79, 0x70, 0x6e),
];
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x88, 0x88, 0x88);
const ALARM: RGBColor = RGBColor(0xc6, 0x00, 0x00);

/// `s` safe inside HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The models in the legend's order: `BenchResults::models`, then any others the rows name.
fn model_order(r: &BenchResults) -> Vec<String> {
    let mut order = r.models.clone();
    for sc in &r.scenarios {
        for row in &sc.rows {
            if !order.contains(&row.model) {
                order.push(row.model.clone());
            }
        }
    }
    order
}

/// The color of `model`, the same in every chart of every run whatever `--models` lists: the
/// seven models take the first seven colors in `Model::ALL`'s order (blocking blue, select
/// orange, ...); any other name (the reference server) one of the rest, by a hash of the name.
fn color(model: &str) -> RGBColor {
    let known = iomodels_server::Model::ALL.len();
    let index = iomodels_server::Model::ALL
        .iter()
        .position(|m| m.name() == model)
        .unwrap_or_else(|| {
            // FNV-1a: stable across runs, builds and platforms (std's hasher is not).
            let hash = model.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            known + (hash % (PALETTE.len() - known) as u64) as usize
        });
    let (r, g, b) = PALETTE[index];
    RGBColor(r, g, b)
}

/// How light `c` looks, 0 (black) to 255 (white): ITU-R BT.601 weights.
fn luminance(c: RGBColor) -> f64 {
    0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2)
}

/// A text style of `px` CSS pixels (the SVG backend writes `font-size` as size / 1.24).
fn font(px: f64) -> FontDesc<'static> {
    ("sans-serif", px * 1.24).into_font()
}

/// Rough rendered width of `s` at `px` (sans-serif, average glyph about 0.56 em).
fn text_width(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * px * 0.56
}

/// One bar of a chart panel.
struct Bar {
    model: String,
    color: RGBColor,
    ran: bool,
    value: Option<Stat>,
    busy: bool,
    mismatch: bool,
}

impl Bar {
    /// The label written after the bar.
    fn label(&self, fmt: Fmt) -> String {
        match (self.ran, self.value) {
            (false, _) => "not run".to_string(),
            (true, None) => DASH.to_string(),
            (true, Some(s)) => {
                let mut l = fmt.format(s.median);
                if self.busy {
                    l.push_str(" *");
                }
                if self.mismatch {
                    l.push_str("  !! MISMATCH");
                }
                l
            }
        }
    }
}

/// One scenario's bars in a chart.
struct Panel {
    title: String,
    bars: Vec<Bar>,
}

/// A chart: a grid of panels (one per scenario) sharing a metric.
struct Chart {
    /// Section heading.
    title: String,
    /// One sentence under the heading: unit and which way is better.
    caption: String,
    fmt: Fmt,
    panels: Vec<Panel>,
}

/// The panels of `metric` for every scenario of `kind`; empty when nothing was measured.
fn panels(r: &BenchResults, kind: &str, metric: fn(&Row) -> Option<Stat>) -> Vec<Panel> {
    r.scenarios
        .iter()
        .filter(|sc| sc.kind == kind)
        .filter(|sc| sc.rows.iter().any(|row| row.ran && metric(row).is_some()))
        .map(|sc| Panel {
            title: sc.name.clone(),
            bars: sc
                .rows
                .iter()
                .map(|row| Bar {
                    model: row.model.clone(),
                    color: color(&row.model),
                    ran: row.ran,
                    value: if row.ran { metric(row) } else { None },
                    busy: row.busy.is_some(),
                    mismatch: row.mismatches > 0,
                })
                .collect(),
        })
        .collect()
}

/// The charts the results have data for, headline first.
fn charts(r: &BenchResults) -> Vec<Chart> {
    let mut out = vec![
        Chart {
            title: "Server CPU per message (the headline)".into(),
            caption: "Server CPU seconds (user + system) per million echoed messages, per \
                      ping-pong scenario. Lower is better."
                .into(),
            fmt: Fmt::Sig,
            panels: panels(r, "pingpong", |row| row.cpu_s_per_million),
        },
        Chart {
            title: "Throughput".into(),
            caption: "Echoed messages per second, per ping-pong scenario. Higher is better, \
                      but on a small machine it also measures how much CPU the load \
                      generator was left with."
                .into(),
            fmt: Fmt::Count,
            panels: panels(r, "pingpong", |row| row.msgs_per_sec),
        },
        Chart {
            title: "p99 latency".into(),
            caption: "99th percentile round-trip time in microseconds, per ping-pong \
                      scenario. Lower is better."
                .into(),
            fmt: Fmt::Sig,
            panels: panels(r, "pingpong", |row| row.p99_us),
        },
        Chart {
            title: "Memory per idle connection".into(),
            caption: "Server RSS growth per open, silent connection. Lower is better.".into(),
            fmt: Fmt::Bytes,
            panels: panels(r, "idle", |row| row.rss_per_conn_bytes),
        },
        Chart {
            title: "Many slow connections: server CPU".into(),
            caption: "Server CPU use in % of one core while many connections each send a \
                      message now and then (c12k: 12,000 connections, one message a second \
                      each; c100k: 100,000, one every 10 s, only the models that hold them). \
                      Lower is better."
                .into(),
            fmt: Fmt::Sig,
            panels: panels(r, "c12k", |row| row.server_cpu_percent)
                .into_iter()
                .chain(panels(r, "c100k", |row| row.server_cpu_percent))
                .collect(),
        },
        Chart {
            title: "Most connections held".into(),
            caption: "Connections open when the ramp stopped (the tables say why). Higher \
                      is better."
                .into(),
            fmt: Fmt::Count,
            panels: panels(r, "max-conns", |row| {
                row.conns_held.map(|n| Stat {
                    median: n as f64,
                    min: n as f64,
                    max: n as f64,
                })
            }),
        },
    ];
    out.retain(|c| !c.panels.is_empty());
    out
}

/// Draws `chart` as an SVG document.
fn chart_svg(chart: &Chart) -> Result<String, String> {
    let cols = if chart.panels.len() > 1 { 2 } else { 1 };
    let rows = chart.panels.len().div_ceil(cols);
    let max_bars = chart
        .panels
        .iter()
        .map(|p| p.bars.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let panel_height = 34 + 38 + 16 + BAR_PITCH * max_bars as u32;
    let height = panel_height * rows as u32;
    let name_px = chart
        .panels
        .iter()
        .flat_map(|p| p.bars.iter())
        .map(|b| text_width(&b.model, 13.0))
        .fold(60.0, f64::max)
        .min(260.0)
        + 14.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in chart.panels.iter().zip(areas.iter()) {
            draw_panel(area, panel, chart.fmt, name_px).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Draws one panel: horizontal bars (medians) with min-max whiskers and value labels, the
/// model names on the left.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    fmt: Fmt,
    name_px: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = panel.bars.len().max(1);
    let (area_w, _) = area.dim_in_pixel();
    let x_max = axis_max(panel, fmt, f64::from(area_w) - name_px - 30.0);
    // Bytes are plotted in one unit so that the axis gets round ticks (2 KiB, not 1.95 KiB).
    let (scale, unit) = match fmt {
        Fmt::Bytes if x_max >= 1024.0 * 1024.0 => (1024.0 * 1024.0, " MiB"),
        Fmt::Bytes if x_max >= 1024.0 => (1024.0, " KiB"),
        Fmt::Bytes => (1.0, " B"),
        _ => (1.0, ""),
    };
    let axis_label = |v: f64| match fmt {
        Fmt::Count => table::fmt_count(v),
        _ if v == 0.0 => "0".to_string(),
        _ => format!("{}{unit}", trim_zeros(table::fmt_sig(v))),
    };
    let x_max = x_max / scale;

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, font(16.0).style(FontStyle::Bold).color(&INK))
        .margin_top(6)
        .margin_bottom(8)
        .margin_left(6)
        .margin_right(18)
        .x_label_area_size(28)
        .y_label_area_size(name_px as u32)
        .build_cartesian_2d(0f64..x_max, 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(6)
        .x_label_formatter(&|v| axis_label(*v))
        .x_label_style(font(12.0).color(&MUTED))
        .axis_style(MUTED)
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
        .light_line_style(TRANSPARENT)
        .draw()?;

    let (base_x, base_y) = area.get_base_pixel();
    let name_style = font(13.0)
        .color(&INK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (i, b) in panel.bars.iter().enumerate() {
        // The first model on top.
        let top = (n - i) as f64;
        let (px, py) = chart.backend_coord(&(0.0, top - 0.5));
        area.draw(&Text::new(
            b.model.clone(),
            (px - base_x - 8, py - base_y),
            name_style.clone(),
        ))?;
        draw_bar(&mut chart, b, fmt, top, scale)?;
    }
    Ok(())
}

/// The axis maximum of a panel `plot_w` pixels wide (at least 100) that leaves room for
/// every bar's value label right of its longest whisker; 1 when nothing was measured.
fn axis_max(panel: &Panel, fmt: Fmt, plot_w: f64) -> f64 {
    let plot_w = plot_w.max(100.0);
    let mut x_max: f64 = 0.0;
    for b in &panel.bars {
        if let Some(s) = b.value {
            let end = s.max.max(s.median);
            let label = text_width(&b.label(fmt), 12.0) + 12.0;
            let room = (plot_w - label).max(plot_w * 0.3);
            x_max = x_max.max(end * plot_w / room);
        }
    }
    if x_max <= 0.0 || !x_max.is_finite() {
        x_max = 1.0;
    }
    x_max
}

/// Draws bar `b` in the band below `top` (its values divided by `scale`): the median bar,
/// the min-max whisker, and the value label inside the bar when it fits there, else after
/// it; a bar with no value gets its label alone.
fn draw_bar<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    b: &Bar,
    fmt: Fmt,
    top: f64,
    scale: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (y0, y1, yc) = (top - 0.85, top - 0.15, top - 0.5);
    let px = chart.backend_coord(&(0.0, yc)).0;
    let label = b.label(fmt);
    let Some(s) = b.value else {
        let face = if b.ran {
            font(12.0)
        } else {
            font(12.0).style(FontStyle::Italic)
        };
        let style = face.color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series(std::iter::once(
            EmptyElement::at((0.0, yc)) + Text::new(label, (6, 0), style),
        ))?;
        return Ok(());
    };
    let s = Stat {
        median: s.median / scale,
        min: s.min / scale,
        max: s.max / scale,
    };
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, y0), (s.median, y1)],
        b.color.filled(),
    )))?;
    if s.max > s.min {
        let whisker = INK.stroke_width(1);
        let cap = 0.22;
        chart.draw_series([
            PathElement::new(vec![(s.min, yc), (s.max, yc)], whisker),
            PathElement::new(vec![(s.min, yc - cap), (s.min, yc + cap)], whisker),
            PathElement::new(vec![(s.max, yc - cap), (s.max, yc + cap)], whisker),
        ])?;
    }
    // The value inside its bar, ending where the whisker begins, when it fits there (in a
    // color that reads on the bar's); else after the whisker.
    let inside = s.min.min(s.median);
    let room_px = chart.backend_coord(&(inside, yc)).0 - px;
    let (at, dx, style) = if !b.mismatch && text_width(&label, 12.0) + 12.0 < f64::from(room_px) {
        let on_bar = if luminance(b.color) > 150.0 {
            INK
        } else {
            WHITE
        };
        let style = font(12.0).style(FontStyle::Bold).color(&on_bar);
        (inside, -6, style.pos(Pos::new(HPos::Right, VPos::Center)))
    } else if b.mismatch {
        let style = font(12.0).style(FontStyle::Bold).color(&ALARM);
        (
            s.max.max(s.median),
            6,
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        )
    } else {
        let style = font(12.0).color(&INK);
        (
            s.max.max(s.median),
            6,
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        )
    };
    chart.draw_series(std::iter::once(
        EmptyElement::at((at, yc)) + Text::new(label, (dx, 0), style),
    ))?;
    Ok(())
}

/// `1.50` → `1.5`, `2.00` → `2`, `120` stays.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The CSS of the page.
const CSS: &str = r#"
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #222;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 20px; background: #fff; }
h1 { font-size: 28px; margin: 0 0 12px; }
h2 { font-size: 21px; margin: 34px 0 4px; padding-top: 10px; border-top: 1px solid #ddd; }
h3 { font-size: 17px; margin: 26px 0 2px; }
h3 .kind { font-weight: normal; color: #777; font-size: 14px; margin-left: 6px; }
p { margin: 6px 0; }
.caption { color: #555; margin-bottom: 8px; }
dl.meta { display: grid; grid-template-columns: 120px 1fr; gap: 3px 14px; margin: 0 0 12px; }
dl.meta dt { color: #666; }
dl.meta dd { margin: 0; }
pre.cmd { margin: 0; white-space: pre-wrap; word-break: break-all;
  font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f3f3f3; padding: 4px 8px; border-radius: 4px; }
.howto { background: #eef4fb; border-left: 4px solid #4e79a7; padding: 10px 14px; margin: 14px 0; }
.quick { background: #fff3cd; border: 2px solid #e0a800; color: #6b4e00; padding: 10px 14px;
  font-weight: bold; margin: 12px 0; }
.alarm { background: #fde8e8; border: 2px solid #c60000; color: #c60000; padding: 10px 14px;
  margin: 12px 0; font-weight: bold; }
.alarm ul { margin: 4px 0 0; padding-left: 20px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 10px 0 4px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; font-size: 14px; }
.legend i { display: inline-block; width: 14px; height: 14px; border-radius: 2px; }
figure { margin: 0; }
.scroll { overflow-x: auto; }
figure svg { display: block; max-width: 100%; height: auto; }
tr.better td { background: #e6f4ea; }
tr.worse td { background: #fde8e8; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13.5px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e3e3; white-space: nowrap; }
th { background: #f0f1f3; text-align: right; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.num { text-align: right; }
td.txt { text-align: left; }
td .sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
tr.notrun td { color: #999; font-style: italic; background: #fafafa; }
tr.mismatch td { background: #fde8e8; }
td.bad { color: #c60000; font-weight: bold; }
.flag { color: #c60000; font-weight: bold; }
.foot { color: #555; font-size: 13.5px; margin: 2px 0; }
.foot.bad { color: #c60000; font-weight: bold; font-size: 15px; }
footer { color: #888; font-size: 13px; margin-top: 30px; }
"#;

/// The results as one self-contained HTML page: the machine, date and command at the top, a
/// short guide to reading it, bar charts (inline SVG, medians with min-max whiskers, one color
/// per model throughout) of server CPU per message, throughput, p99 latency, memory per idle
/// connection, CPU under many slow connections and connections held, as far as the results
/// have them, then every scenario's table. Wrong echoes are flagged in red at the top, in the
/// charts and in the tables; rows that did not run are greyed with their note. No scripts.
/// The report of `r`; with `baseline`, also a section comparing it with that earlier run
/// (`compare.rs`).
pub fn render_html(r: &BenchResults, baseline: Option<(&BenchResults, &[Line])>) -> String {
    let mut h = String::new();
    head(&mut h, r);
    machine(&mut h, r);
    mismatch_alarm(&mut h, r);
    for note in r.machine.os_notes() {
        h.push_str(&format!("<div class=\"quick\">{}</div>\n", esc(&note)));
    }
    h.push_str(
        "<div class=\"howto\"><strong>How to read this.</strong> The headline is the \
         <em>server CPU time per message</em>: on a small machine the load generator competes \
         with the server for the same CPUs, so throughput and latency say as much about the \
         load generator as about the model, while the CPU the server spent per echoed message \
         is the model's own cost. Bars are medians over the repetitions; whiskers span their \
         min-max. A <strong>*</strong> marks a measurement taken while other processes were \
         using the CPU. Rows that did not run are greyed with the reason. Quick runs are not \
         to be trusted.</div>\n",
    );
    all_charts(&mut h, r);
    if let Some((old, lines)) = baseline {
        comparison_section(&mut h, old, lines);
    }
    h.push_str(
        "<h2>All numbers</h2>\n<p class=\"caption\">Medians over the repetitions; \
                hover a number for its min and max.</p>\n",
    );
    for sc in &r.scenarios {
        scenario_table(&mut h, sc);
    }
    h.push_str("<footer>Generated by iomodels bench.</footer>\n</main>\n</body>\n</html>\n");
    h
}

/// The page's head, its title, and the warning of a quick run.
fn head(h: &mut String, r: &BenchResults) {
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!(
        "<title>iomodels bench, {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&r.date)
    ));
    h.push_str("<h1>iomodels: I/O models compared</h1>\n");
    if r.quick {
        h.push_str(
            "<div class=\"quick\">Quick run (--quick): a short subset with few \
             repetitions. These numbers are not to be trusted.</div>\n",
        );
    }
}

/// The machine, the build and the command, as a definition list.
fn machine(h: &mut String, r: &BenchResults) {
    let m = &r.machine;
    h.push_str("<dl class=\"meta\">\n");
    let cores = format!("{} online", m.host.cores);
    let realtime = if m.realtime {
        format!("yes ({})", m.realtime_name())
    } else {
        "no".to_string()
    };
    let os = m.host.os_label();
    let build = r.build.to_string();
    let repeat = format!(
        "{} per model and scenario (tables and bars: median; whiskers: min-max)",
        r.repeat
    );
    for (k, v) in [
        ("CPU", m.host.cpu_model.as_str()),
        ("cores", cores.as_str()),
        ("kernel", m.host.kernel.as_str()),
        ("OS", os.as_str()),
        ("placement", m.placement.as_str()),
        ("realtime", realtime.as_str()),
        ("date", r.date.as_str()),
        ("build", build.as_str()),
        ("repetitions", repeat.as_str()),
    ] {
        h.push_str(&format!("<dt>{k}</dt><dd>{}</dd>\n", esc(v)));
    }
    h.push_str(&format!(
        "<dt>command</dt><dd><pre class=\"cmd\">{}</pre></dd>\n</dl>\n",
        esc(&r.command)
    ));
}

/// The red alarm at the top when a model echoed wrong bytes, naming each and the scenario.
fn mismatch_alarm(h: &mut String, r: &BenchResults) {
    let mismatches: Vec<(&ScenarioResult, &Row)> = r
        .scenarios
        .iter()
        .flat_map(|sc| sc.rows.iter().map(move |row| (sc, row)))
        .filter(|(_, row)| row.mismatches > 0)
        .collect();
    if mismatches.is_empty() {
        return;
    }
    h.push_str(
        "<div class=\"alarm\">!! MISMATCH: the server echoed wrong bytes. A model that \
         does so is broken, and its numbers in that scenario mean nothing.<ul>\n",
    );
    for (sc, row) in &mismatches {
        h.push_str(&format!(
            "<li>{} echoed {} wrong bytes in {}</li>\n",
            esc(&row.model),
            table::thousands(row.mismatches),
            esc(&sc.name)
        ));
    }
    h.push_str("</ul></div>\n");
}

/// The legend, then every chart the results have: the bar charts, the latency curves and
/// the soak's memory and descriptors over time.
fn all_charts(h: &mut String, r: &BenchResults) {
    let charts = charts(r);
    let soaks = series(r, |row| row.soak.as_ref().filter(|k| !k.samples.is_empty()));
    let curves = series(r, |row| row.curve.as_ref().filter(|c| !c.points.is_empty()));
    if !charts.is_empty() || !soaks.is_empty() || !curves.is_empty() {
        legend(h, r);
    }
    for chart in &charts {
        figure(
            h,
            &esc(&chart.title),
            &esc(&chart.caption),
            chart_svg(chart),
        );
    }
    if !curves.is_empty() {
        let caption = "Open loop \
             (load --rate): each model offered a ladder of rates; the 99th percentile (thick, \
             dots) and the median (thin) of the latency measured from each message's due time, \
             so a server that falls behind shows it (no coordinated omission). Both axes \
             logarithmic. A hollow dot: a step not kept (less than 90 % of the offered rate \
             sent or echoed, or the p99 exploded); the curve ends there. Lower and further right is \
             better.";
        let title = "Latency against offered load";
        figure(h, title, caption, curve_svg(&curves));
    }
    if !soaks.is_empty() {
        let windows = r.machine.host.os == "windows";
        for (title, caption, fds) in [
            (
                "Soak: server memory over time",
                if windows {
                    "Working set (MiB) of each model's server (GetProcessMemoryInfo), sampled \
                     after the warm-up, under mixed load with faults. Flat is the goal."
                } else {
                    "Resident set size (MiB) of each model's server, sampled from /proc/PID/status \
                     after the warm-up, under mixed load with faults. Flat is the goal."
                },
                false,
            ),
            (
                "Soak: server descriptors over time",
                if windows {
                    "Kernel handles of each model's server (sockets, events, threads) over the \
                     same run. Flat is the goal: a leak climbs."
                } else {
                    "Open descriptors of each model's server (/proc/PID/fd) over the same run. \
                     Flat is the goal: a leak climbs."
                },
                true,
            ),
        ] {
            figure(h, &esc(title), &esc(caption), soak_svg(&soaks, fds));
        }
    }
}

/// One color swatch per model, in the charts' order.
fn legend(h: &mut String, r: &BenchResults) {
    h.push_str("<div class=\"legend\">");
    for model in &model_order(r) {
        let c = color(model);
        h.push_str(&format!(
            "<span><i style=\"background:rgb({},{},{})\"></i>{}</span>",
            c.0,
            c.1,
            c.2,
            esc(model)
        ));
    }
    h.push_str("</div>\n");
}

/// A chart under its title and caption (both HTML already), or the reason it failed.
fn figure(h: &mut String, title: &str, caption: &str, svg: Result<String, String>) {
    h.push_str(&format!(
        "<h2>{title}</h2>\n<p class=\"caption\">{caption}</p>\n<figure>\n"
    ));
    match svg {
        Ok(svg) => h.push_str(&svg),
        Err(e) => h.push_str(&format!("<p class=\"flag\">chart failed: {}</p>", esc(&e))),
    }
    h.push_str("\n</figure>\n");
}

/// "Compared with the baseline": one row per metric both runs measured, old and new median
/// with their ranges, the ratio, and the verdict (ranges overlapping: no change shown).
fn comparison_section(h: &mut String, old: &BenchResults, lines: &[Line]) {
    h.push_str(&format!(
        "<h2>Compared with the baseline</h2>\n<p class=\"caption\">The baseline: {} ({}, \
         {}). Median [min–max] of each run, this run over the baseline, and whether the \
         min–max ranges are apart (a change) or overlap (within the repetitions' spread).</p>\n",
        esc(&old.date),
        esc(&old.command),
        esc(&old.machine.host.cpu_model)
    ));
    if lines.is_empty() {
        h.push_str("<p>Nothing to compare: no scenario and model ran in both.</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>scenario</th><th>model</th><th>metric</th><th>baseline</th>\
         <th>this run</th><th>ratio</th><th></th></tr>\n",
    );
    for l in lines {
        let class = match l.verdict() {
            Verdict::Overlap => "",
            Verdict::Better => " class=\"better\"",
            Verdict::Worse => " class=\"worse\"",
        };
        h.push_str(&format!(
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>\n",
            esc(&l.scenario),
            esc(&l.model),
            esc(l.metric),
            esc(&l.range(l.old)),
            esc(&l.range(l.new)),
            esc(&l.ratio_text()),
            esc(l.verdict_text())
        ));
    }
    h.push_str("</table>\n");
}

/// What `pick` finds in each row that has it (a soak's time series, a rate scenario's curve),
/// with the row's model.
fn series<'a, T>(
    r: &'a BenchResults,
    pick: impl Fn(&'a Row) -> Option<&'a T>,
) -> Vec<(&'a str, &'a T)> {
    r.scenarios
        .iter()
        .flat_map(|sc| sc.rows.iter())
        .filter_map(|row| Some((row.model.as_str(), pick(row)?)))
        .collect()
}

/// A line chart of the soak series: RSS in MiB, or (`fds`) open descriptors, over seconds.
fn soak_svg(series: &[(&str, &Soak)], fds: bool) -> Result<String, String> {
    let value = |s: &SoakSample| {
        if fds {
            s.fds as f64
        } else {
            s.rss as f64 / (1024.0 * 1024.0)
        }
    };
    let points = || series.iter().flat_map(|(_, k)| k.samples.iter());
    let t_max = points().map(|s| s.t).fold(1.0, f64::max);
    let y_max = points().map(value).fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds after the warm-up")
            .y_desc(if fds { "descriptors" } else { "RSS, MiB" })
            .label_style(font(12.0).color(&INK))
            .axis_desc_style(font(13.0).color(&MUTED))
            .light_line_style(WHITE)
            .y_label_formatter(&|v| {
                if fds {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (model, k) in series {
            chart
                .draw_series(LineSeries::new(
                    k.samples.iter().map(|s| (s.t, value(s))),
                    color(model).stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The curves as one chart: p99 (and p50) from the schedule against the offered rate, both
/// axes logarithmic, one color per model ([`color`]).
fn curve_svg(series: &[(&str, &Curve)]) -> Result<String, String> {
    let points = || series.iter().flat_map(|(_, c)| c.points.iter());
    let x_min = points()
        .map(|p| p.rate_requested_per_sec)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let x_max = points()
        .map(|p| p.rate_requested_per_sec)
        .fold(x_min * 2.0, f64::max);
    let y_min = points()
        .map(|p| p.p50_us.median)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let y_max = points()
        .map(|p| p.p99_us.median)
        .fold(y_min * 10.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x_min / 1.2..x_max * 1.2).log_scale(),
                (y_min / 1.5..y_max * 1.5).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("offered load, messages per second (log)")
            .y_desc("latency from the schedule, µs (log)")
            .label_style(font(12.0).color(&INK))
            .axis_desc_style(font(13.0).color(&MUTED))
            .light_line_style(WHITE)
            .x_label_formatter(&|v| table::fmt_count(*v))
            .y_label_formatter(&|v| table::fmt_sig(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        for (model, c) in series {
            let col = color(model);
            let xy = |f: fn(&CurvePoint) -> f64| {
                c.points
                    .iter()
                    .map(move |p| (p.rate_requested_per_sec, f(p)))
            };
            chart
                .draw_series(LineSeries::new(
                    xy(|p| p.p50_us.median),
                    col.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(
                    xy(|p| p.p99_us.median),
                    col.stroke_width(3),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(c.points.iter().map(|p| {
                    let style = if p.kept {
                        col.filled()
                    } else {
                        col.stroke_width(2)
                    };
                    Circle::new((p.rate_requested_per_sec, p.p99_us.median), 4, style)
                }))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Appends one scenario's heading, table and footnotes.
fn scenario_table(h: &mut String, sc: &ScenarioResult) {
    let cols = table::columns_of(sc);
    h.push_str(&format!(
        "<h3>{}<span class=\"kind\">{}</span></h3>\n<p class=\"caption\">{}</p>\n",
        esc(&sc.name),
        esc(&sc.kind),
        esc(&sc.description)
    ));
    h.push_str("<div class=\"scroll\"><table>\n<thead><tr><th>model</th>");
    for c in &cols {
        h.push_str(&format!("<th>{}</th>", esc(c.header)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &sc.rows {
        table_row(h, row, &cols);
    }
    h.push_str("</tbody>\n</table></div>\n");
    if let Some(m) = table::curve_matrix(sc) {
        h.push_str(
            "<p class=\"caption\">Latency from the schedule at each offered rate, p50 / p99 \
             in µs (medians over the repetitions); ! marks a step not kept.</p>\n\
             <div class=\"scroll\"><table>\n",
        );
        for (i, line) in m.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            h.push_str("<tr>");
            for c in line {
                h.push_str(&format!("<{tag}>{}</{tag}>", esc(c)));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table></div>\n");
    }
    for row in sc.rows.iter().filter(|row| row.mismatches > 0) {
        h.push_str(&format!(
            "<p class=\"foot bad\">!! MISMATCH: {} echoed {} wrong bytes in {}</p>\n",
            esc(&row.model),
            table::thousands(row.mismatches),
            esc(&sc.name)
        ));
    }
    for row in &sc.rows {
        if let Some(busy) = &row.busy {
            h.push_str(&format!(
                "<p class=\"foot\">* {}: the machine was busy during the run ({})</p>\n",
                esc(&row.model),
                esc(busy)
            ));
        }
    }
    for row in sc.rows.iter().filter(|row| row.ran) {
        if let Some(note) = &row.note {
            h.push_str(&format!(
                "<p class=\"foot\">note: {}: {}</p>\n",
                esc(&row.model),
                esc(note)
            ));
        }
    }
}

/// One model's line of a scenario table: its swatch, name and flags, then its cells (or why
/// it did not run).
fn table_row(h: &mut String, row: &Row, cols: &[table::Column]) {
    let class = if !row.ran {
        " class=\"notrun\""
    } else if row.mismatches > 0 {
        " class=\"mismatch\""
    } else {
        ""
    };
    let c = color(&row.model);
    let mut model = format!(
        "<span class=\"sw\" style=\"background:rgb({},{},{})\"></span>{}",
        c.0,
        c.1,
        c.2,
        esc(&row.model)
    );
    if let Some(busy) = &row.busy {
        model.push_str(&format!(" <span title=\"busy: {}\">*</span>", esc(busy)));
    }
    if row.mismatches > 0 {
        model.push_str(&format!(
            " <span class=\"flag\" title=\"{} wrong bytes\">!! MISMATCH</span>",
            table::thousands(row.mismatches)
        ));
    }
    h.push_str(&format!("<tr{class}><td>{model}</td>"));
    if !row.ran {
        h.push_str(&format!(
            "<td class=\"txt\" colspan=\"{}\">not run: {}</td>",
            cols.len(),
            esc(row.note.as_deref().unwrap_or("no reason given"))
        ));
    }
    for col in cols.iter().filter(|_| row.ran) {
        let mut cls = if col.numeric() { "num" } else { "txt" }.to_string();
        if row.mismatches > 0 || (matches!(col.kind, table::ColKind::Errors) && row.errors > 0) {
            cls.push_str(" bad");
        }
        let title = col
            .spread(row)
            .map(|s| format!(" title=\"{}\"", esc(&s)))
            .unwrap_or_default();
        h.push_str(&format!(
            "<td class=\"{cls}\"{title}>{}</td>",
            esc(&col.cell(row))
        ));
    }
    h.push_str("</tr>\n");
}

#[cfg(test)]
mod tests {
    use super::super::table::sample;
    use super::*;

    const MODELS: [&str; 4] = ["blocking", "io-uring", "event-select", "reference: <tokio>"];

    #[test]
    fn self_contained_and_escaped() {
        let r = sample::results(&MODELS, "iomodels bench --scenario '<&>' --out a&b");
        let h = render_html(&r, None);
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.contains("<svg"));
        assert!(!h.to_lowercase().contains("<script"));
        assert!(!h.contains("http://") || !h.contains("src=\"http"));
        assert!(!h.contains("<link"));
        assert!(h.contains("iomodels bench --scenario &#39;&lt;&amp;&gt;&#39; --out a&amp;b"));
        assert!(!h.contains("<&>"));
        for m in MODELS {
            assert!(h.contains(&esc(m)), "{m}");
        }
        assert!(!h.contains("<tokio>"));
        assert!(h.contains("!! MISMATCH: event-select echoed 1,234 wrong bytes in pp64-100"));
        assert!(h.contains("class=\"notrun\""));
        assert!(h.contains("not run: needs Linux 5.19 &lt;io_uring&gt; &amp; CAP_SYS_ADMIN"));
        assert!(h.contains(DASH));
        // Headline, throughput, p99, RSS, c12k CPU, connections held.
        assert_eq!(h.matches("<svg").count(), 6);
    }

    #[test]
    fn a_rate_scenario_draws_its_curves_with_the_models_colors_on_log_axes() {
        let mut r = sample::results(&["blocking"], "iomodels bench");
        r.scenarios = vec![sample::rate_scenario()];
        let h = render_html(&r, None);
        assert!(h.contains("<h2>Latency against offered load</h2>"), "{h}");
        assert_eq!(h.matches("<svg").count(), 1, "only the curve chart");
        let svg = &h[h.find("<svg").unwrap()..h.find("</svg>").unwrap()];
        for model in ["blocking", "select"] {
            let c = color(model);
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            // Two lines (p50, p99) per model, in its color.
            assert_eq!(
                svg.matches(&format!(
                    "<polyline fill=\"none\" opacity=\"1\" stroke=\"{hex}\""
                ))
                .count(),
                2,
                "{model} {hex}: {svg}"
            );
        }
        // A dot per step: 3 + 2, two of them hollow (not kept).
        assert_eq!(svg.matches("<circle").count(), 5, "{svg}");
        assert!(svg.contains("offered load, messages per second (log)"));
        // The matrix under the table.
        assert!(h.contains("<td>90,000 / 1,500,000 !</td>"), "{h}");
        // The legend and the table have io-uring, not run, but no line.
        assert!(h.contains("needs Linux 5.19"));
    }

    #[test]
    fn one_table_row_per_model_per_scenario() {
        let r = sample::results(&MODELS, "iomodels bench");
        let h = render_html(&r, None);
        assert_eq!(
            h.matches("<tr").count(),
            r.scenarios.len() * (1 + MODELS.len())
        );
        assert_eq!(h.matches("<table>").count(), r.scenarios.len());
    }

    /// A model keeps its color whatever else a run has (`--models` used to shift them: the
    /// colors went by position), in the legend and in the table alike; the seven models have
    /// seven different colors.
    #[test]
    fn a_model_has_the_same_color_in_every_run() {
        let swatch = |h: &str, model: &str| {
            let at = h
                .find(&format!("</i>{}</span>", esc(model)))
                .unwrap_or_else(|| panic!("{model} in the legend"));
            let start = h[..at].rfind("rgb(").unwrap();
            h[start..at].split(')').next().unwrap().to_string()
        };
        let all = sample::results(&MODELS, "iomodels bench");
        let some = sample::results(&MODELS[2..], "iomodels bench --models event-select");
        let (all, some) = (render_html(&all, None), render_html(&some, None));
        for model in &MODELS[2..] {
            assert_eq!(swatch(&all, model), swatch(&some, model), "{model}");
        }
        let colors: std::collections::HashSet<_> = iomodels_server::Model::ALL
            .iter()
            .map(|m| color(m.name()))
            .map(|c| (c.0, c.1, c.2))
            .collect();
        assert_eq!(colors.len(), iomodels_server::Model::ALL.len());
        assert_eq!(color("reference: <tokio>"), color("reference: <tokio>"));
    }

    #[test]
    fn absent_charts_are_skipped() {
        let mut r = sample::results(&MODELS, "iomodels bench");
        r.scenarios.retain(|sc| sc.kind == "pingpong");
        r.quick = true;
        let h = render_html(&r, None);
        assert_eq!(h.matches("<svg").count(), 3);
        assert!(!h.contains("Memory per idle connection"));
        assert!(h.contains("not to be trusted"));

        let mut empty = r.clone();
        empty.scenarios.clear();
        let h = render_html(&empty, None);
        assert!(!h.contains("<svg"));
    }

    /// Writes the sample report for a look in a browser when `IOMODELS_REPORT_SAMPLE` names a
    /// file.
    #[test]
    fn write_sample() {
        if let Ok(path) = std::env::var("IOMODELS_REPORT_SAMPLE") {
            let models = [
                "blocking",
                "io-uring",
                "select",
                "async-select",
                "event-select",
                "overlapped-event",
                "overlapped-callback",
                "completion-port",
                "epoll",
                "reference: tokio",
            ];
            let r = sample::results(
                &models,
                "target/release/iomodels bench --repeat 3 --out <&>",
            );
            std::fs::write(&path, render_html(&r, None)).unwrap();
            std::fs::write(format!("{path}.txt"), table::render_table(&r)).unwrap();
        }
    }
}
