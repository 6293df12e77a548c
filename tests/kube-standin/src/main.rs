//! `kube-standin [DIR]`: run the stand-in until interrupted, with its CA and
//! a kubeconfig written to DIR (default: a new temporary folder), to try
//! kubectl or Rollcage against it by hand.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("kube-standin-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let standin = rollcage_kube_standin::StandIn::start();
    let kubeconfig = standin.write_kubeconfig(&dir);
    println!("Kubernetes API stand-in at {}", standin.url);
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!("CA: {}", dir.join("ca.pem").display());
    loop {
        std::thread::park();
    }
}
