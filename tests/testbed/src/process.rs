//! Child processes owned by a test: stopped by PID (SIGTERM, then SIGKILL) when the handle
//! drops, also during a panic's unwind.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestbedError;

/// A running child process, stopped on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
}

impl Process {
    /// Spawns `command` with stdin closed; stdout/stderr go to `log` if given, else inherited.
    pub fn spawn(
        name: &str,
        command: &mut Command,
        log: Option<&std::path::Path>,
    ) -> Result<Self, TestbedError> {
        command.stdin(Stdio::null());
        if let Some(log) = log {
            let file = std::fs::File::create(log)
                .map_err(TestbedError::io(format!("creating {}", log.display())))?;
            let err = file
                .try_clone()
                .map_err(TestbedError::io("cloning log handle"))?;
            command.stdout(file).stderr(err);
        }
        let child = command.spawn().map_err(|e| TestbedError::Command {
            command: format!("{command:?}"),
            detail: e.to_string(),
        })?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
        })
    }

    /// The PID of the child.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>, TestbedError> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(TestbedError::io("waiting for child"))?
            {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: format!("{} to exit", self.name),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Stops the process: SIGTERM, up to `grace` to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
