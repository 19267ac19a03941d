//! Plain-text tables of the CLI's reports (`kiln pipeline`, `kiln tune`,
//! `kiln case-study`).

/// `head` and `rows` as aligned columns two spaces apart, with a dashed rule
/// under the head: columns listed in `left` left-aligned (text), the others
/// right-aligned (figures); widths in characters; each line ends in `\n`,
/// trailing spaces trimmed.
pub(crate) fn render<R: AsRef<[String]>>(head: &[&str], rows: &[R], left: &[usize]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (k, c) in r.as_ref().iter().enumerate().take(w.len()) {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (k, x) in cells.iter().enumerate().take(w.len()) {
            if left.contains(&k) {
                s.push_str(&format!("{x:<width$}  ", width = w[k]));
            } else {
                s.push_str(&format!("{x:>width$}  ", width = w[k]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&line(&w.iter().map(|&n| "-".repeat(n)).collect::<Vec<_>>()));
    for r in rows {
        out.push_str(&line(r.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_text_left_and_figures_right() {
        let rows = vec![
            vec!["a".to_string(), "1.5".to_string()],
            vec!["long name".to_string(), "10".to_string()],
        ];
        let t = super::render(&["name", "ms"], &rows, &[0]);
        assert_eq!(
            t,
            "name        ms\n---------  ---\na          1.5\nlong name   10\n"
        );
    }
}
