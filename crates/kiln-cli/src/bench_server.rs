//! `kiln bench --server`: timed runs on request, for an out-of-process
//! benchmark driver (`scripts/bench`).
//!
//! Protocol: each line read is a count N (blank lines are skipped); the server
//! runs N timed iterations and answers one line `{"ms":[...]}` (wall time of
//! each run in milliseconds), flushed at once. It returns at end of input.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::time::Instant;

/// Most iterations one request may ask for.
const MAX_ITERS: usize = 1_000_000;

/// Answers requests from `input` on `output`, timing each call of `run`.
pub fn serve(run: &mut dyn FnMut() -> Result<()>, input: impl BufRead, mut output: impl Write) -> Result<()> {
    for line in input.lines() {
        let line = line.context("--server: reading stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n: usize = match line.parse() {
            Ok(n) if n <= MAX_ITERS => n,
            _ => bail!("--server: expected an iteration count (0..={MAX_ITERS}) per line, got '{line}'"),
        };
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            run()?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        writeln!(output, "{}", serde_json::json!({ "ms": ms }))?;
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_each_count_and_stops_at_eof() {
        let mut calls = 0;
        let mut out = Vec::new();
        serve(
            &mut || {
                calls += 1;
                Ok(())
            },
            "2\n\n0\n3\n".as_bytes(),
            &mut out,
        )
        .unwrap();
        assert_eq!(calls, 5);
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let lens: Vec<usize> = lines.iter().map(|v| v["ms"].as_array().unwrap().len()).collect();
        assert_eq!(lens, [2, 0, 3]);
    }

    #[test]
    fn rejects_garbage_and_passes_run_errors_on() {
        let mut ok = || Ok(());
        assert!(serve(&mut ok, "x\n".as_bytes(), Vec::new()).is_err());
        assert!(serve(&mut ok, "-1\n".as_bytes(), Vec::new()).is_err());
        let mut fail = || bail!("boom");
        let e = serve(&mut fail, "1\n".as_bytes(), Vec::new()).unwrap_err();
        assert!(e.to_string().contains("boom"));
    }
}
