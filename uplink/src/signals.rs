//! SIGTERM/SIGINT as a channel: the signals are blocked in every thread (call [`install`]
//! before spawning any) and one thread waits for them with `sigwait`, so no handler runs in
//! signal context.

use std::sync::mpsc;

use nix::sys::signal::{SigSet, Signal};

/// Blocks SIGTERM and SIGINT and returns a receiver that gets one message per signal.
pub fn install() -> std::io::Result<mpsc::Receiver<Signal>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(std::io::Error::from)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = set.wait() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
