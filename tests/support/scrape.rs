//! Reading a processor's /metrics the way Prometheus does: over HTTP, as
//! text exposition format, one sample per line.

use std::collections::BTreeMap;
use std::time::Duration;

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The body of GET /metrics; empty when the instance does not answer.
pub fn metrics_text(addr: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    match agent.get(format!("http://{addr}/metrics")).call() {
        Ok(mut response) => response.body_mut().read_to_string().unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Every sample of the metric `name` (exactly that name, no suffix).
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .filter(|(n, _)| n == name)
        .map(|(_, s)| s)
        .collect()
}

/// The single unlabelled (or only) sample of `name`, if there is one.
pub fn value(text: &str, name: &str) -> Option<f64> {
    let all = samples(text, name);
    (all.len() == 1).then(|| all[0].value)
}

/// The sample of `name` whose labels include `label` = `want`.
pub fn value_with(text: &str, name: &str, label: &str, want: &str) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find(|s| s.labels.get(label).map(String::as_str) == Some(want))
        .map(|s| s.value)
}

/// Per-partition values of a `{topic,partition}` metric.
pub fn per_partition(text: &str, name: &str) -> BTreeMap<i32, f64> {
    samples(text, name)
        .into_iter()
        .map(|s| {
            let p = s.labels["partition"]
                .parse()
                .expect("partition label is a number");
            (p, s.value)
        })
        .collect()
}

fn parse_line(line: &str) -> Option<(String, Sample)> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (head, BTreeMap::new()),
    };
    Some((name.to_owned(), Sample { labels, value }))
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// `promtool check metrics` on a scrape: the exposition format and
/// Prometheus's naming lints, as a Prometheus server would meet them.
pub fn assert_promtool_accepts(text: &str) {
    use std::io::Write;
    let promtool = super::tool(".local/bin/promtool", "the scrape is checked with promtool");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(text.as_bytes())
        .expect("promtool reads the scrape");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
