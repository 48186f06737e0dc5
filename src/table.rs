//! Aligned tables for humans; every list verb also has `--json` for scripts.

/// Formats rows under headers, columns padded to their widest cell.
pub fn format(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Prints a table to stdout.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", format(headers, rows));
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let t = super::format(
            &["NAME", "X"],
            &[vec!["a".into(), "1".into()], vec!["long".into(), "2".into()]],
        );
        assert_eq!(t, "NAME  X\na     1\nlong  2\n");
    }
}
