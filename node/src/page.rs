//! The status page (`GET /_stowage/`): the status report as one
//! server-rendered HTML page with its CSS inline, no script, refreshing
//! itself every few seconds. Members are grouped by zone, since zones are
//! what a Stowage cluster survives the loss of. Laid out in flowing cards so
//! it reads on a phone as on a laptop.

use std::fmt::Write as _;

use crate::admin::{MemberStatus, Status};

/// How often the page reloads itself.
const REFRESH_SECS: u32 = 5;

/// Escapes text for HTML element content and quoted attributes.
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

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(0) => "now".into(),
        Some(ms) if ms < 10_000 => format!("{ms} ms ago"),
        Some(ms) => format!("{} s ago", ms / 1000),
    }
}

const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--dim:#5d6675;--line:#e2e5ea;--ok:#1f8a4c;--warn:#b26b00;--bad:#c0392b;--lead:#2457c5}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1d2128;--ink:#e8ebf0;--dim:#9aa3b2;--line:#2d333d}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{padding:16px 20px;border-bottom:1px solid var(--line);background:var(--card)}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:var(--dim)}
main{padding:16px 20px;max-width:1200px;margin:0 auto}
h2{font-size:16px;margin:22px 0 10px}
.verdict{padding:10px 14px;border-radius:8px;background:var(--card);border-left:4px solid var(--ok)}
.verdict.degraded{border-left-color:var(--warn)}
.zones,.cards{display:flex;flex-wrap:wrap;gap:12px}
.zone{flex:1 1 260px;background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px}
.zone h3{margin:0 0 8px;font-size:15px}
.member{border-top:1px solid var(--line);padding:8px 0}
.member:first-of-type{border-top:0}
.badge{display:inline-block;font-size:12px;padding:1px 8px;border-radius:10px;border:1px solid var(--line);color:var(--dim);margin-left:6px}
.badge.leader{background:var(--lead);border-color:var(--lead);color:#fff}
.badge.down{background:var(--bad);border-color:var(--bad);color:#fff}
.badge.stale{color:var(--warn);border-color:var(--warn)}
.kv{color:var(--dim);font-size:13px}
.stat{flex:1 1 140px;background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.stat b{display:block;font-size:22px}
.stat.bad b{color:var(--bad)}
.tablewrap{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:10px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:7px 10px;border-top:1px solid var(--line);white-space:nowrap}
th{border-top:0;color:var(--dim);font-weight:600}
td.err{white-space:normal;color:var(--bad)}
footer{color:var(--dim);font-size:12px;padding:20px}
"#;

/// A member's health and when this node last heard from it.
fn health(m: &MemberStatus) -> (&'static str, String) {
    (m.health(), ago(m.last_contact_ms))
}

pub fn render(s: &Status) -> String {
    let mut h = String::new();
    let title = format!("Stowage · node {} · {}", s.node_id, s.role);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{}</title><style>{CSS}</style></head><body>",
        esc(&title)
    );
    let leader = s.leader.map_or("none".to_owned(), |l| format!("node {l}"));
    let _ = write!(
        h,
        "<header><h1>Stowage</h1><p>this is node <b>{}</b> in zone <b>{}</b>, <b>{}</b> · \
         leader: <b id=\"leader\" data-leader=\"{}\">{}</b> · term {} · applied {} · cluster {}</p></header><main>",
        s.node_id,
        esc(&s.zone),
        esc(&s.role),
        s.leader.map_or(String::new(), |l| l.to_string()),
        esc(&leader),
        s.term,
        s.last_applied.map_or("-".into(), |a| a.to_string()),
        esc(s.cluster_id.as_deref().unwrap_or("not formed yet")),
    );

    let degraded = s.replication.missing_chunks > 0
        || s.replication.under_replicated_blobs > 0
        || s.replication.lost_chunks > 0
        || s.replication.unreachable_nodes > 0
        || s.disk.read_only;
    let _ = write!(
        h,
        "<div class=\"verdict{}\" id=\"verdict\">{}{}</div>",
        if degraded { " degraded" } else { "" },
        esc(&s.replication.summary),
        if s.disk.read_only {
            " · this node's disk is under its reserve: pushes answer 507"
        } else {
            ""
        }
    );

    // Members by zone.
    let mut zones: Vec<&str> = s.members.iter().map(|m| m.zone.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    let _ = write!(
        h,
        "<h2>Members by zone</h2><section class=\"zones\" id=\"zones\">"
    );
    for z in &zones {
        let _ = write!(
            h,
            "<div class=\"zone\" data-zone=\"{0}\"><h3>zone {0}</h3>",
            esc(z)
        );
        for m in s.members.iter().filter(|m| m.zone == *z) {
            let is_leader = s.leader == Some(m.id);
            let (state, contact) = health(m);
            let role = if is_leader {
                "leader"
            } else if !m.counted {
                "new disk"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            let _ = write!(
                h,
                "<div class=\"member\" data-node=\"{}\" data-role=\"{}\" data-health=\"{state}\">\
                 <b>node {}</b>{}<span class=\"badge {state}\">{state}</span>{}\
                 <div class=\"kv\">last contact {}{} · {}</div></div>",
                m.id,
                if is_leader { "leader" } else { role },
                m.id,
                if is_leader {
                    "<span class=\"badge leader\">leader</span>"
                } else {
                    ""
                },
                if is_leader {
                    String::new()
                } else {
                    format!("<span class=\"badge\">{role}</span>")
                },
                esc(&contact),
                // Known on the leader only.
                m.matched
                    .map_or(String::new(), |x| format!(" · log matched to {x}")),
                esc(m.http_addr.as_deref().unwrap_or(&m.rpc_addr)),
            );
        }
        h.push_str("</div>");
    }
    h.push_str("</section>");

    // Under-replicated data.
    let r = &s.replication;
    h.push_str("<h2>Replicas</h2><section class=\"cards\" id=\"replicas\">");
    for (label, v) in [
        ("missing chunks", r.missing_chunks),
        ("under-replicated blobs", r.under_replicated_blobs),
        ("misplaced copies", r.misplaced_chunks),
        ("lost chunks", r.lost_chunks),
        ("unreachable nodes", r.unreachable_nodes),
    ] {
        let _ = write!(
            h,
            "<div class=\"stat{}\"><b>{v}</b>{label}</div>",
            if v > 0 { " bad" } else { "" }
        );
    }
    h.push_str("</section><div class=\"tablewrap\" style=\"margin-top:12px\"><table><tr><th>node</th><th>zone</th><th>chunks</th><th>bytes</th><th>missing</th><th>under-repl.</th><th>queued</th><th>repaired</th></tr>");
    for n in &r.nodes {
        match &n.health {
            Some(x) => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    n.id,
                    esc(&n.zone),
                    x.held_chunks,
                    bytes(x.held_bytes),
                    x.missing_chunks,
                    x.under_replicated_blobs,
                    x.queued,
                    x.repaired_chunks
                );
            }
            None => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td colspan=\"6\" class=\"err\">not answering</td></tr>",
                    n.id,
                    esc(&n.zone)
                );
            }
        }
    }
    h.push_str("</table></div>");

    // This node's disk.
    let d = &s.disk;
    let _ = write!(
        h,
        "<h2>Disk</h2><section class=\"cards\" id=\"disk\"><div class=\"stat{}\"><b>{}</b>free of {}</div>\
         <div class=\"stat\"><b>{}</b>reserve (min_free_bytes)</div></section>",
        if d.read_only { " bad" } else { "" },
        bytes(d.free_bytes),
        bytes(d.total_bytes),
        bytes(d.min_free_bytes),
    );

    // Background jobs.
    h.push_str("<h2>Background jobs</h2><div class=\"tablewrap\" id=\"workers\"><table><tr><th>job</th><th>state</th><th>progress</th><th>steps</th><th>last error</th></tr>");
    for w in &s.workers {
        let _ = write!(
            h,
            "<tr data-worker=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td class=\"err\">{4}</td></tr>",
            esc(&w.name),
            esc(&w.state),
            esc(&w.progress),
            w.steps,
            esc(w.last_error.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table></div>");

    // Recent errors.
    h.push_str("<h2>Recent warnings and errors</h2><div class=\"tablewrap\" id=\"errors\"><table><tr><th>when</th><th>level</th><th>what</th></tr>");
    if s.recent_errors.is_empty() {
        h.push_str("<tr><td colspan=\"3\">none since start</td></tr>");
    }
    let now = crate::registry::now_ms();
    for e in s.recent_errors.iter().take(20) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"err\">{}: {}</td></tr>",
            esc(&ago(Some(now.saturating_sub(e.unix_ms)))),
            esc(&e.level),
            esc(&e.target),
            esc(&e.message),
        );
    }
    h.push_str("</table></div>");
    let _ = write!(
        h,
        "</main><footer>refreshes every {REFRESH_SECS} s · JSON: <a href=\"/_stowage/status\">/_stowage/status</a> · \
         metrics: <a href=\"/metrics\">/metrics</a></footer></body></html>"
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
