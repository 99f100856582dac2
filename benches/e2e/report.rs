//! The table: one row per point, ours against the bare baseline as a ratio, the goal and
//! whether it was met; with several runs, each point's run with the median ratio.

/// One point of one run.
pub(crate) struct Row {
    pub(crate) point: String,
    pub(crate) ours: f64,
    pub(crate) bare: f64,
    pub(crate) unit: &'static str,
    /// `Some(x)` = goal `ratio >= x`; for `higher_is_better == false`, `ratio <= x`.
    pub(crate) goal: Option<f64>,
    pub(crate) higher_is_better: bool,
    pub(crate) note: String,
}

impl Row {
    /// Ours over bare (NaN when bare measured nothing).
    fn ratio(&self) -> f64 {
        if self.bare > 0.0 {
            self.ours / self.bare
        } else {
            f64::NAN
        }
    }

    /// Whether the goal was met: `yes`, `NO`, or `-` without a goal.
    fn met(&self) -> &'static str {
        match self.goal {
            None => "-",
            Some(g) if self.higher_is_better && self.ratio() >= g => "yes",
            Some(g) if !self.higher_is_better && self.ratio() <= g => "yes",
            Some(_) => "NO",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Print the table of `runs_rows` (every run has the same points, in the same order) on
/// stdout, in Markdown.
pub(crate) fn print_table(runs_rows: &[Vec<Row>]) {
    println!();
    println!("| point | ours | bare | ratio | goal | met? | note |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let points = runs_rows.first().map(|r| r.len()).unwrap_or(0);
    for p in 0..points {
        let ratios: Vec<f64> = runs_rows
            .iter()
            .filter_map(|r| r.get(p))
            .map(Row::ratio)
            .collect();
        let med = median(ratios.clone());
        let Some(row) = runs_rows
            .iter()
            .filter_map(|r| r.get(p))
            .find(|r| r.ratio().total_cmp(&med).is_eq())
        else {
            continue;
        };
        println!("{}", table_line(row, &ratios));
    }
}

/// The table line of `row`, with every run's ratio when there were several.
fn table_line(row: &Row, ratios: &[f64]) -> String {
    let goal = match row.goal {
        Some(g) if row.higher_is_better => format!(">= {g}"),
        Some(g) => format!("<= {g}"),
        None => "-".into(),
    };
    let all = if ratios.len() > 1 {
        format!(
            " (ratios: {})",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "| {} | {:.prec$} {} | {:.prec$} {} | {:.2} | {} | {} | {}{} |",
        row.point,
        row.ours,
        row.unit,
        row.bare,
        row.unit,
        row.ratio(),
        goal,
        row.met(),
        row.note,
        all,
        prec = if row.bare.abs() < 100.0 { 2 } else { 0 }
    )
}
