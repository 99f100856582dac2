//! The table: one row per figure, deflate against plain from the same run, and their ratio.

/// One line of the table: a figure with deflate and plain, from the same run.
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) deflate: f64,
    pub(crate) plain: f64,
    pub(crate) unit: &'static str,
    pub(crate) note: String,
}

/// Print `rows` on stdout, in Markdown, after an empty line.
pub(crate) fn print_table(rows: &[Row]) {
    println!();
    println!("| figure | deflate | plain | deflate / plain | note |");
    println!("| --- | --- | --- | --- | --- |");
    for r in rows {
        let prec = if r.plain.abs() < 100.0 { 2 } else { 0 };
        let ratio = if r.plain > 0.0 {
            format!("{:.2}", r.deflate / r.plain)
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.prec$} {} | {:.prec$} {} | {ratio} | {} |",
            r.figure, r.deflate, r.unit, r.plain, r.unit, r.note
        );
    }
}
