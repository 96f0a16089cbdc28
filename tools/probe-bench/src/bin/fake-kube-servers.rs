//! Runs fake Kubernetes API servers in a process of their own, so a benchmark's client side and
//! server side do not share one process's file-descriptor limit. Prints one line per server,
//! `URL<TAB>CA-PEM-FILE`, then `ready`, and serves until stdin closes.

use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let token = args.next().unwrap_or_else(|| "bench-token".into());
    let dir = tempfile_dir()?;
    let mut fakes = Vec::new();
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let fake = corral_fake_kube::FakeKube::start(&[token.as_str()]).await;
        let ca = dir.join(format!("ca-{i}.pem"));
        std::fs::write(&ca, fake.ca_pem())?;
        writeln!(out, "{}\t{}", fake.url(), ca.display())?;
        fakes.push(fake);
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    // Until the parent goes away.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await.unwrap_or(0) > 0 {}
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("corral-fake-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
