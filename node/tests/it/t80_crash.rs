use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::t20_blobs::walk;

type Acked = Arc<Mutex<Vec<(String, String, String, Vec<Vec<u8>>)>>>;

#[tokio::test]
async fn kill9_during_pushes_loses_nothing_acknowledged() {
    let mut node = Node::start_with(bin(), &["--chunk-size-bytes", "65536"]);
    let acked: Acked = Arc::default();
    let c = client();
    for round in 0..3u64 {
        let url = node.url.clone();
        let mut workers = Vec::new();
        for w in 0..8u64 {
            let acked = acked.clone();
            let url = url.clone();
            let c = client();
            workers.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let seed = round * 1_000_000 + w * 10_000 + n;
                    let repo = format!("crash/w{w}");
                    let tag = format!("r{round}-{n}");
                    let sizes = [
                        1000 + (seed % 50_000) as usize,
                        200_000 + (seed % 7) as usize,
                    ];
                    match try_push_image(&c, &url, &repo, &tag, seed, &sizes).await {
                        Ok((digest, layers)) => {
                            acked.lock().unwrap().push((repo, tag, digest, layers))
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let a few pushes complete, then pull the plug at an arbitrary
        // moment.
        let before = acked.lock().unwrap().len();
        while acked.lock().unwrap().len() < before + 10 + usize::try_from(round).unwrap() * 7 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(37 * (round + 1))).await;
        node.kill9();
        for w in workers {
            let _ = w.await;
        }
        node.restart();
        let all = acked.lock().unwrap().clone();
        eprintln!("round {round}: {} acknowledged images so far", all.len());
        for (repo, tag, digest, layers) in &all {
            verify_image(&c, &node.url, repo, tag, digest, layers).await;
        }
        let temps = walk(&node.data_dir.join("chunks/tmp"));
        assert!(
            temps.is_empty(),
            "start-up removed partial chunk files: {temps:?}"
        );
    }
}
