//! A TCP proxy a test can cut or stall, standing between the server and a
//! real service (Redis): the way to take a dependency away mid-test and
//! give it back without touching the service other tests share.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Open,
    /// Closes every connection, new ones at once: a service that is down.
    Cut,
    /// Holds every connection open and forwards nothing: a service that
    /// hangs.
    Stall,
}

/// A running proxy; dropped, it stops.
pub struct Proxy {
    /// Where to connect instead of the service.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to `target`, open.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watcher) = watch::channel(Mode::Open);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let task = tokio::spawn(serve(client, target, watcher.clone()));
                let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                held.retain(|t| !t.is_finished());
                held.push(task);
            }
        });
        Ok(Self {
            addr,
            mode,
            accept,
            connections,
        })
    }

    /// Switches every connection, present and future, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

async fn serve(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Cut => {
                let _ = client.shutdown().await;
                return;
            }
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Open => break,
        }
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *mode.borrow_and_update();
                match now {
                    Mode::Open => continue,
                    Mode::Cut => return,
                    Mode::Stall => {
                        // Hold both ends, forward nothing, until the mode
                        // changes; then the connection is dropped (the
                        // bytes in flight are lost, as a real hang loses
                        // them).
                        let _ = mode.changed().await;
                        return;
                    }
                }
            }
        }
    }
}
