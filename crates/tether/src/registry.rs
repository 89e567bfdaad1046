//! The live-session registry: which worker session belongs to which (user, app), whether a tab
//! holds it, and whether it still needs its state restored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::identity::UserId;

/// How long a page's session is held for its websocket before another tab may take it.
pub const RESERVATION: Duration = Duration::from_secs(30);

/// One live worker session minted by this gateway.
#[derive(Debug, Clone)]
struct Live {
    /// Owner; checked again on every websocket.
    user: UserId,
    /// App name (the script's stem).
    app: String,
    /// Worker slot that holds the session.
    worker: usize,
    /// Worker incarnation the session lives in; a restart loses it.
    generation: u64,
    /// Open websockets; a session with any is not handed to another tab.
    connections: usize,
    /// A page was just served for it; keep it for that page's websocket until then.
    reserved_until: Option<Instant>,
    /// Last moment a connection ended (or the session was created).
    idle_since: Instant,
    /// The worker session is fresh and the user has saved state: replay before relaying.
    restore: bool,
}

/// What a page request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The user's idle live session: the page reattaches to it.
    Reattach { session_id: String, worker: usize },
    /// A new session, minted by the caller.
    Fresh { session_id: String, worker: usize },
}

/// What a websocket gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    /// Worker slot to connect to.
    pub worker: usize,
    /// Replay the user's state into the session before relaying.
    pub restore: bool,
}

/// What the registry needs to know about the moment and the workers for one decision.
pub struct Context<'a> {
    /// Now; passed in so tests can use paused time.
    pub now: Instant,
    /// A worker slot's current incarnation.
    pub generation: &'a (dyn Fn(usize) -> u64 + Sync),
    /// The slot for a session created by this decision.
    pub worker: usize,
    /// Whether the user has saved state, so a new session needs a restore.
    pub has_state: bool,
}

/// All live sessions of this gateway. Time is passed in, so tests can use paused time.
pub struct Registry {
    /// Sessions by signed id.
    sessions: Mutex<HashMap<String, Live>>,
    /// How long an unconnected session is kept for reattach (`--live-ttl`).
    live_ttl: Duration,
}

impl Registry {
    pub fn new(live_ttl: Duration) -> Registry {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            live_ttl,
        }
    }

    fn alive(&self, s: &Live, now: Instant, generation: &dyn Fn(usize) -> u64) -> bool {
        s.generation == generation(s.worker)
            && (s.connections > 0
                || s.reserved_until.is_some_and(|t| t > now)
                || now.duration_since(s.idle_since) < self.live_ttl)
    }

    /// Chooses the session for a page: an idle live one of this (user, app), else a new one.
    ///
    /// `mint` makes a new signed id, called only when a new session is needed.
    pub fn page(
        &self,
        user: &UserId,
        app: &str,
        cx: &Context<'_>,
        mint: impl FnOnce() -> String,
    ) -> Page {
        let (now, generation, has_state) = (cx.now, cx.generation, cx.has_state);
        let mut sessions = self.sessions.lock().expect("registry lock");
        sessions.retain(|_, s| self.alive(s, now, generation));
        let idle = sessions.iter_mut().find(|(_, s)| {
            s.user == *user
                && s.app == app
                && s.connections == 0
                && !s.reserved_until.is_some_and(|t| t > now)
        });
        if let Some((id, s)) = idle {
            s.reserved_until = Some(now + RESERVATION);
            return Page::Reattach {
                session_id: id.clone(),
                worker: s.worker,
            };
        }
        let session_id = mint();
        let w = cx.worker;
        sessions.insert(
            session_id.clone(),
            Live {
                user: user.clone(),
                app: app.to_owned(),
                worker: w,
                generation: generation(w),
                connections: 0,
                reserved_until: Some(now + RESERVATION),
                idle_since: now,
                restore: has_state,
            },
        );
        Page::Fresh {
            session_id,
            worker: w,
        }
    }

    /// Registers a websocket. The caller has already checked that the id belongs to the user.
    ///
    /// A session this registry does not know, or whose worker restarted, is gone from the worker
    /// (DESIGN.md, trap 2): it is adopted, placed on `worker`, and marked for restore.
    pub fn connect(&self, session_id: &str, user: &UserId, app: &str, cx: &Context<'_>) -> Attach {
        let (now, generation, has_state) = (cx.now, cx.generation, cx.has_state);
        let mut sessions = self.sessions.lock().expect("registry lock");
        let live = sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| Live {
                user: user.clone(),
                app: app.to_owned(),
                worker: cx.worker,
                generation: 0,
                connections: 0,
                reserved_until: None,
                idle_since: now,
                restore: false,
            });
        let current = generation(live.worker);
        if live.generation != current
            || (live.connections == 0
                && now.duration_since(live.idle_since) >= self.live_ttl
                && !live.reserved_until.is_some_and(|t| t > now))
        {
            // Vanished behind our back, or so old the worker may have reaped it: start afresh.
            live.generation = current;
            live.restore = has_state;
        }
        live.connections += 1;
        live.reserved_until = None;
        Attach {
            worker: live.worker,
            restore: std::mem::take(&mut live.restore),
        }
    }

    /// A websocket ended.
    pub fn disconnect(&self, session_id: &str, now: Instant) {
        let mut sessions = self.sessions.lock().expect("registry lock");
        if let Some(s) = sessions.get_mut(session_id) {
            s.connections = s.connections.saturating_sub(1);
            s.idle_since = now;
        }
    }

    /// Drops every session of a user (the `/.tether/forget` endpoint). Returns the ids dropped.
    pub fn forget(&self, user: &UserId) -> Vec<(String, usize)> {
        let mut sessions = self.sessions.lock().expect("registry lock");
        let gone: Vec<(String, usize)> = sessions
            .iter()
            .filter(|(_, s)| s.user == *user)
            .map(|(id, s)| (id.clone(), s.worker))
            .collect();
        for (id, _) in &gone {
            sessions.remove(id);
        }
        gone
    }

    /// Counts for metrics: (live sessions, connected tabs).
    pub fn counts(&self) -> (usize, usize) {
        let sessions = self.sessions.lock().expect("registry lock");
        let tabs = sessions.values().map(|s| s.connections).sum();
        (sessions.len(), tabs)
    }

    /// Live sessions per worker slot, for least-loaded placement.
    pub fn load(&self, slots: usize) -> Vec<usize> {
        let sessions = self.sessions.lock().expect("registry lock");
        let mut load = vec![0; slots];
        for s in sessions.values() {
            if let Some(l) = load.get_mut(s.worker) {
                *l += 1;
            }
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn gen1(_: usize) -> u64 {
        1
    }

    fn cx(
        now: Instant,
        generation: &(dyn Fn(usize) -> u64 + Sync),
        has_state: bool,
    ) -> Context<'_> {
        Context {
            now,
            generation,
            worker: 0,
            has_state,
        }
    }

    fn page(r: &Registry, u: &UserId, id: &str, now: Instant) -> Page {
        r.page(u, "app", &cx(now, &gen1, false), || id.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn reopen_reattaches_only_when_idle() {
        let r = Registry::new(TTL);
        let u = UserId::random();
        let t0 = Instant::now();
        assert!(matches!(page(&r, &u, "s1", t0), Page::Fresh { .. }));
        // The page's websocket connects; a second tab meanwhile gets its own session.
        r.connect("s1", &u, "app", &cx(t0, &gen1, false));
        assert!(
            matches!(page(&r, &u, "s2", t0), Page::Fresh { session_id, .. } if session_id == "s2")
        );
        r.connect("s2", &u, "app", &cx(t0, &gen1, false));
        // Tab 1 closes; reopening reattaches to s1.
        r.disconnect("s1", t0);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            page(&r, &u, "s3", t1),
            Page::Reattach {
                session_id: "s1".into(),
                worker: 0
            }
        );
        // While that page's websocket is pending, another page does not take s1 too.
        assert!(matches!(page(&r, &u, "s4", t1), Page::Fresh { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_after_live_ttl() {
        let r = Registry::new(TTL);
        let u = UserId::random();
        let t0 = Instant::now();
        page(&r, &u, "s1", t0);
        r.connect("s1", &u, "app", &cx(t0, &gen1, false));
        r.disconnect("s1", t0);
        let later = t0 + TTL + Duration::from_secs(1);
        assert!(matches!(page(&r, &u, "s2", later), Page::Fresh { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn other_users_never_share() {
        let r = Registry::new(TTL);
        let (a, b) = (UserId::random(), UserId::random());
        let t0 = Instant::now();
        page(&r, &a, "sa", t0);
        r.connect("sa", &a, "app", &cx(t0, &gen1, false));
        r.disconnect("sa", t0);
        assert!(matches!(page(&r, &b, "sb", t0), Page::Fresh { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn worker_restart_means_restore() {
        let r = Registry::new(TTL);
        let u = UserId::random();
        let t0 = Instant::now();
        page(&r, &u, "s1", t0);
        assert!(!r.connect("s1", &u, "app", &cx(t0, &gen1, true)).restore);
        r.disconnect("s1", t0);
        let gen2 = |_: usize| 2;
        // A page after the restart is a fresh session that needs restoring.
        let p = r.page(&u, "app", &cx(t0, &gen2, true), || "s2".into());
        assert!(matches!(p, Page::Fresh { .. }));
        assert!(r.connect("s2", &u, "app", &cx(t0, &gen2, true)).restore);
        // An open tab that reconnects its old session after the restart is restored too.
        assert!(r.connect("s1", &u, "app", &cx(t0, &gen2, true)).restore);
        // Unknown (for example, minted before the gateway restarted) sessions are adopted.
        assert!(r.connect("s9", &u, "app", &cx(t0, &gen2, true)).restore);
    }
}
