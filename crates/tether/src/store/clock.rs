//! Time for stores whose expiry is computed by tether (SQLite), injectable so that tests can
//! move time forward, or step the wall clock, without sleeping.
//!
//! Expiry stamps outlive the process, so they cannot be Tokio's monotonic instants. Each stamp
//! is taken twice: on the wall clock, and on this boot's clock (the kernel's `CLOCK_BOOTTIME`,
//! read from `/proc/uptime`). The boot clock counts suspend, every process reads the same one
//! until the next reboot, and a step of the wall clock (by an operator or NTP) does not move
//! it. A stamp made during the current boot is judged by the boot clock, so a clock jump never
//! expires anything early; only a stamp from an earlier boot falls back to the wall clock.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A reading of the current boot's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootTime {
    /// Which boot: differs after every reboot.
    pub id: Arc<str>,
    /// Milliseconds since that boot, including time suspended.
    pub millis: i64,
}

/// A source of "now".
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The current time in milliseconds since the Unix epoch (0 before 1970).
    fn now_millis(&self) -> i64 {
        let since = self.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }

    /// The boot clock, where the system has one (see the module docs).
    fn boot(&self) -> Option<BootTime> {
        None
    }
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn boot(&self) -> Option<BootTime> {
        Some(BootTime {
            id: boot_id()?,
            millis: boot_millis()?,
        })
    }
}

/// This boot's id, read once.
fn boot_id() -> Option<Arc<str>> {
    static ID: OnceLock<Option<Arc<str>>> = OnceLock::new();
    ID.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| Arc::from(id))
    })
    .clone()
}

/// Milliseconds since boot from `/proc/uptime` (the boot clock, to 10 ms).
fn boot_millis() -> Option<i64> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as i64)
}

/// A clock that only moves when told to; cheap to clone, clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    /// Shared by the store that reads it and the test that moves it.
    inner: Arc<Mutex<Manual>>,
}

#[derive(Debug)]
struct Manual {
    /// Wall-clock time.
    wall: SystemTime,
    /// The boot clock, `None` to act like a system without one.
    boot: Option<BootTime>,
    /// Reboots so far, to name the next boot.
    boots: u32,
}

impl ManualClock {
    /// A clock stopped at the current real time, with a boot clock at zero.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock stopped at `start`, with a boot clock at zero.
    pub fn starting_at(start: SystemTime) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Manual {
                wall: start,
                boot: Some(BootTime {
                    id: Arc::from("boot-0"),
                    millis: 0,
                }),
                boots: 0,
            })),
        }
    }

    /// A clock stopped at `start` on a system without a boot clock: wall time only.
    pub fn wall_only(start: SystemTime) -> Self {
        let clock = Self::starting_at(start);
        clock.lock().boot = None;
        clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets `by` pass: both clocks move.
    pub fn advance(&self, by: Duration) {
        let mut m = self.lock();
        m.wall += by;
        if let Some(boot) = m.boot.as_mut() {
            boot.millis += i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        }
    }

    /// Steps the wall clock forward by `by`, as an operator or NTP might; no time passes.
    pub fn jump_forward(&self, by: Duration) {
        self.lock().wall += by;
    }

    /// Steps the wall clock back by `by`; no time passes.
    pub fn jump_back(&self, by: Duration) {
        self.lock().wall -= by;
    }

    /// A reboot: a new boot id, and the boot clock starts again from zero.
    pub fn reboot(&self) {
        let mut m = self.lock();
        m.boots += 1;
        let id = Arc::from(format!("boot-{}", m.boots));
        if let Some(boot) = m.boot.as_mut() {
            *boot = BootTime { id, millis: 0 };
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().wall
    }

    fn boot(&self) -> Option<BootTime> {
        self.lock().boot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_at(UNIX_EPOCH + Duration::from_secs(10));
        let other = clock.clone();
        assert_eq!(clock.now_millis(), 10_000);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_millis(), 11_500);
        assert_eq!(clock.boot().unwrap().millis, 1500);
        other.jump_forward(Duration::from_secs(100));
        assert_eq!(clock.now_millis(), 111_500);
        assert_eq!(
            clock.boot().unwrap().millis,
            1500,
            "a jump is not time passing"
        );
        other.reboot();
        assert_eq!(
            clock.boot().unwrap(),
            BootTime {
                id: "boot-1".into(),
                millis: 0
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_system_boot_clock_is_read_and_moves_forward() {
        let a = SystemClock.boot().expect("boot clock on Linux");
        std::thread::sleep(Duration::from_millis(20));
        let b = SystemClock.boot().expect("boot clock on Linux");
        assert_eq!(a.id, b.id);
        assert!(b.millis >= a.millis + 20, "{a:?} then {b:?}");
    }
}
