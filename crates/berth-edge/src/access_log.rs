//! One JSON line per request, written by a dedicated thread so a slow disk or a blocked stdout
//! never stalls the proxy: when the queue is full the line is dropped and counted.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

use crate::metrics::EdgeMetrics;

const QUEUE: usize = 64 * 1024;

#[derive(Debug, Serialize)]
pub struct AccessRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: String,
    pub client: IpAddr,
    pub host: String,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub route: Arc<str>,
    pub release: Arc<str>,
    pub upstream: Option<Arc<str>>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Where access-log lines go. Cloning shares the writer.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<AccessRecord>>,
    metrics: Arc<EdgeMetrics>,
}

impl AccessLog {
    pub fn off(metrics: Arc<EdgeMetrics>) -> Self {
        Self { tx: None, metrics }
    }

    pub fn to_writer(out: Box<dyn Write + Send>, metrics: Arc<EdgeMetrics>) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("berth-access-log".into())
            .spawn(move || write_loop(rx, out))
            .map(|_| Self {
                tx: Some(tx),
                metrics: metrics.clone(),
            })
            .unwrap_or_else(|_| Self::off(metrics))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, record: AccessRecord) {
        // Full (the writer fell behind) or disconnected (it died): the line is lost either way.
        if let Some(tx) = &self.tx
            && tx.try_send(record).is_err()
        {
            self.metrics.access_log_dropped.inc();
        }
    }
}

fn write_loop(rx: Receiver<AccessRecord>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            if serde_json::to_writer(&mut out, &record).is_ok() {
                let _ = out.write_all(b"\n");
            }
            next = rx.try_recv().ok();
        }
        // Flush whenever the queue drains, so lines appear promptly at low traffic.
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn logged_time(t: SystemTime) -> String {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        rfc3339(&t, &mut ser).expect("serialises");
        serde_json::from_slice(&out).expect("a JSON string")
    }

    #[test]
    fn formats_utc_timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(logged_time(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            logged_time(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(logged_time(leap), "2000-02-29T00:00:00.000Z");
    }
}
