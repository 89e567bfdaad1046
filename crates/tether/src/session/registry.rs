//! The live-session registry: which worker session belongs to which (user, app), whether a tab
//! holds it, and whether it still needs its state restored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::UserId;

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
    /// The (user, app) history version this session's document reflects. A session behind
    /// the current version (another tab recorded since) is never reattached: it would show
    /// an older state.
    synced: u64,
}

/// What a page request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The user's idle live session: the page reattaches to it.
    Reattach { session_id: String, worker: usize },
    /// A new session, minted by the caller. `freed`: an idle session on its worker was
    /// dropped to make room for it, which the worker may not have freed yet.
    Fresh {
        session_id: String,
        worker: usize,
        freed: bool,
    },
    /// The user's up-to-date session is still connected, probably to the tab being reloaded,
    /// whose websocket closes in a moment: ask again shortly.
    Busy,
    /// A new session is needed for a visitor with no saved state, but the gateway already
    /// holds `--max-sessions`, or the worker is at `--worker-memory`, and every session is
    /// connected.
    Full,
}

/// What a websocket gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    /// Worker slot to connect to.
    pub worker: usize,
    /// Replay the user's state into the session before relaying.
    pub restore: bool,
    /// The generation of the worker process the session lives in.
    pub generation: u64,
}

/// Which incarnation each worker slot is in: a session of an older one is gone.
pub trait Generations: Sync {
    /// The slot's current incarnation.
    fn generation(&self, worker: usize) -> u64;
}

impl<F: Fn(usize) -> u64 + Sync> Generations for F {
    fn generation(&self, worker: usize) -> u64 {
        self(worker)
    }
}

/// What the registry needs to know about the moment and the workers for one decision.
pub struct Context<'a> {
    /// Now; passed in so tests can use paused time.
    pub now: Instant,
    /// The worker slots' current incarnations.
    pub generation: &'a dyn Generations,
    /// The slot for a session created by this decision.
    pub worker: usize,
    /// Whether the user has saved state, so a new session needs a restore.
    pub has_state: bool,
    /// A page may be told to wait for the user's connected session to come free.
    pub may_wait: bool,
    /// The slot `worker` is at its memory bound (`--worker-memory`): a new session there
    /// first drops its least recently used idle one.
    pub make_room: bool,
}

/// Why a live session was dropped before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A new visitor came at `--max-sessions`.
    SessionLimit,
    /// Its worker was past `--worker-memory`.
    Memory,
}

/// An idle live session the registry dropped to make room; its worker should discard it.
/// Its user's state is kept, and their next visit restores it into a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The signed session id.
    pub session_id: String,
    /// The worker slot it lives on.
    pub worker: usize,
    /// The generation of that slot it lives in.
    pub generation: u64,
    /// Why it was dropped.
    pub why: Why,
}

/// History versions kept beyond twice the live sessions before the unused ones are dropped.
const VERSIONS_SLACK: usize = 1024;

impl Inner {
    /// Drops the versions of histories no live session shows: with no session to compare,
    /// a version means nothing, and keeping every user's forever would grow without bound.
    /// Amortised: runs only once they outnumber twice the sessions by [`VERSIONS_SLACK`].
    fn prune_versions(&mut self) {
        if self.versions.len() <= 2 * self.sessions.len() + VERSIONS_SLACK {
            return;
        }
        let shown: std::collections::HashSet<(&UserId, &str)> = self
            .sessions
            .values()
            .map(|s| (&s.user, s.app.as_str()))
            .collect();
        self.versions
            .retain(|(user, app), _| shown.contains(&(user, app.as_str())));
    }

    fn version(&self, user: &UserId, app: &str) -> u64 {
        // One lookup per page; the key is cloned only for the map's sake.
        self.versions
            .get(&(user.clone(), app.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// All live sessions of this gateway. Time is passed in, so tests can use paused time.
pub struct Registry {
    /// Sessions by signed id, and each (user, app)'s history version.
    inner: Mutex<Inner>,
    /// How long an unconnected session is kept for reattach (`--live-ttl`).
    live_ttl: Duration,
    /// Most live sessions held at once (`--max-sessions`); each costs worker memory until it
    /// expires, so a flood of new visitors must not make more.
    max_sessions: usize,
    /// Counts websockets ended, so that pages told [`Page::Busy`] wake when one ends.
    released: tokio::sync::watch::Sender<u64>,
    /// Sessions dropped to make room, for their workers to discard.
    evicted: tokio::sync::mpsc::UnboundedSender<Eviction>,
    /// The other end of `evicted`, until [`Registry::evictions`] takes it.
    evictions: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Eviction>>>,
}

/// The registry's state, under one lock.
#[derive(Default)]
struct Inner {
    /// Sessions by signed id.
    sessions: HashMap<String, Live>,
    /// Changes recorded per (user, app) so far: the version of its history.
    versions: HashMap<(UserId, String), u64>,
}

impl Registry {
    pub fn new(live_ttl: Duration, max_sessions: usize) -> Registry {
        let (evicted, evictions) = tokio::sync::mpsc::unbounded_channel();
        Registry {
            inner: Mutex::new(Inner::default()),
            live_ttl,
            max_sessions: max_sessions.max(1),
            released: tokio::sync::watch::Sender::new(0),
            evicted,
            evictions: Mutex::new(Some(evictions)),
        }
    }

    /// The sessions dropped to make room, as they are dropped; the first call takes them.
    pub fn evictions(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Eviction>> {
        self.evictions.lock().expect("registry lock").take()
    }

    /// Drops up to `n` unconnected sessions of slot `worker` (any slot: `None`), least
    /// recently used first, those still reserved for a page's websocket last: a page whose
    /// session is gone gets a new one when its websocket comes. Returns how many were dropped.
    pub fn evict(&self, worker: Option<usize>, n: usize, why: Why, now: Instant) -> usize {
        let mut inner = self.inner.lock().expect("registry lock");
        self.evict_locked(&mut inner.sessions, worker, n, why, now)
    }

    fn evict_locked(
        &self,
        sessions: &mut HashMap<String, Live>,
        worker: Option<usize>,
        n: usize,
        why: Why,
        now: Instant,
    ) -> usize {
        if n == 0 {
            return 0;
        }
        let mut idle: Vec<(bool, Instant, &String)> = sessions
            .iter()
            .filter(|(_, s)| s.connections == 0 && worker.is_none_or(|w| w == s.worker))
            .map(|(id, s)| (s.reserved_until.is_some_and(|t| t > now), s.idle_since, id))
            .collect();
        let n = n.min(idle.len());
        if n < idle.len() {
            idle.select_nth_unstable(n);
        }
        let gone: Vec<String> = idle[..n].iter().map(|(_, _, id)| (*id).clone()).collect();
        for id in gone {
            if let Some(s) = sessions.remove(&id) {
                let _ = self.evicted.send(Eviction {
                    session_id: id,
                    worker: s.worker,
                    generation: s.generation,
                    why,
                });
            }
        }
        n
    }

    /// Whether a session is kept: a connected one always (after a reload its old worker
    /// drains, and its tab still records), an unconnected one while its worker generation is
    /// current and it is reserved or within `--live-ttl`.
    fn alive(&self, s: &Live, now: Instant, generation: &dyn Generations) -> bool {
        s.connections > 0
            || (s.generation == generation.generation(s.worker)
                && (s.reserved_until.is_some_and(|t| t > now)
                    || now.duration_since(s.idle_since) < self.live_ttl))
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
        let mut inner = self.inner.lock().expect("registry lock");
        inner.sessions.retain(|_, s| self.alive(s, now, generation));
        inner.prune_versions();
        let version = inner.version(user, app);
        let sessions = &mut inner.sessions;
        let mine = |s: &Live| s.user == *user && s.app == app && s.synced == version;
        // The most recently used up-to-date session that no tab holds.
        let idle = sessions
            .iter_mut()
            .filter(|(_, s)| {
                mine(s) && s.connections == 0 && s.reserved_until.is_none_or(|t| t <= now)
            })
            .max_by_key(|(_, s)| s.idle_since);
        if let Some((id, s)) = idle {
            s.reserved_until = Some(now + RESERVATION);
            return Page::Reattach {
                session_id: id.clone(),
                worker: s.worker,
            };
        }
        if cx.may_wait && sessions.values().any(|s| mine(s) && s.connections > 0) {
            return Page::Busy;
        }
        // Live sessions are a cache: every user can be restored, so at a bound the least
        // recently used idle session makes room. Only when every session is connected is a new
        // visitor refused; a returning user with saved state is restored even then, as the
        // bounds are against floods of new visitors, who have none.
        if sessions.len() >= self.max_sessions
            && self.evict_locked(sessions, None, 1, Why::SessionLimit, now) == 0
            && !has_state
        {
            return Page::Full;
        }
        // A worker over its bound with no session at all is over it by itself: refusing
        // would not bring it under, so the visitor is served.
        let freed =
            cx.make_room && self.evict_locked(sessions, Some(cx.worker), 1, Why::Memory, now) > 0;
        if cx.make_room && !freed && !has_state && sessions.values().any(|s| s.worker == cx.worker)
        {
            return Page::Full;
        }
        let session_id = mint();
        let w = cx.worker;
        sessions.insert(
            session_id.clone(),
            Live {
                user: user.clone(),
                app: app.to_owned(),
                worker: w,
                generation: generation.generation(w),
                connections: 0,
                reserved_until: Some(now + RESERVATION),
                idle_since: now,
                restore: has_state,
                synced: version,
            },
        );
        Page::Fresh {
            session_id,
            worker: w,
            freed,
        }
    }

    /// Registers a websocket. The caller has already checked that the id belongs to the user.
    ///
    /// A session this registry does not know, or whose worker restarted, is gone from the worker,
    /// which would silently build an empty one under the same id: it is adopted, placed on
    /// `worker`, and marked for restore.
    pub fn connect(&self, session_id: &str, user: &UserId, app: &str, cx: &Context<'_>) -> Attach {
        let (now, generation, has_state) = (cx.now, cx.generation, cx.has_state);
        let mut inner = self.inner.lock().expect("registry lock");
        let version = inner.version(user, app);
        let live = inner
            .sessions
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
                synced: 0,
            });
        let current = generation.generation(live.worker);
        if live.generation != current
            || (live.connections == 0
                && now.duration_since(live.idle_since) >= self.live_ttl
                && live.reserved_until.is_none_or(|t| t <= now))
        {
            // Vanished behind our back, or so old the worker may have reaped it: start afresh,
            // on the worker the caller chose (the old one may still be restarting).
            live.worker = cx.worker;
            live.generation = generation.generation(cx.worker);
            live.restore = has_state;
        }
        if live.restore || !has_state {
            // A restore replays the whole history as of now; with no history there is nothing
            // to be behind on.
            live.synced = version;
        }
        live.connections += 1;
        live.reserved_until = None;
        Attach {
            worker: live.worker,
            restore: std::mem::take(&mut live.restore),
            generation: live.generation,
        }
    }

    /// Changes were recorded through this session: its (user, app) history moved on, and
    /// this session is the one that reflects it.
    pub fn recorded(&self, session_id: &str, changes: usize) {
        let mut inner = self.inner.lock().expect("registry lock");
        let Inner { sessions, versions } = &mut *inner;
        if let Some(s) = sessions.get_mut(session_id) {
            let v = versions.entry((s.user.clone(), s.app.clone())).or_default();
            *v += changes as u64;
            s.synced = *v;
        }
    }

    /// The (user, app) history changed outside this gateway: none of its sessions is current.
    pub fn history_changed(&self, user: &UserId, app: &str) {
        let mut inner = self.inner.lock().expect("registry lock");
        *inner
            .versions
            .entry((user.clone(), app.to_owned()))
            .or_default() += 1;
    }

    /// A websocket ended; pages waiting for a session to come free ask again.
    pub fn disconnect(&self, session_id: &str, now: Instant) {
        let mut inner = self.inner.lock().expect("registry lock");
        if let Some(s) = inner.sessions.get_mut(session_id) {
            s.connections = s.connections.saturating_sub(1);
            s.idle_since = now;
        }
        drop(inner);
        self.released.send_modify(|n| *n += 1);
    }

    /// Sees every [`Registry::disconnect`] after this call (`changed()` resolves): take it
    /// *before* asking [`Registry::page`], so a release between the two is not missed.
    pub fn releases(&self) -> tokio::sync::watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// Forgets a session the worker never made (its page was answered with a redirect to a
    /// login, or an error), so that it holds no place under `--max-sessions`.
    pub fn discard(&self, session_id: &str) {
        let mut inner = self.inner.lock().expect("registry lock");
        if inner
            .sessions
            .get(session_id)
            .is_some_and(|s| s.connections == 0)
        {
            inner.sessions.remove(session_id);
        }
    }

    /// Drops every session of a user (the `/.tether/forget` endpoint). Returns the ids dropped.
    pub fn forget(&self, user: &UserId) -> Vec<(String, usize)> {
        let mut inner = self.inner.lock().expect("registry lock");
        inner.versions.retain(|(u, _), _| u != user);
        let sessions = &mut inner.sessions;
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
        let inner = self.inner.lock().expect("registry lock");
        let sessions = &inner.sessions;
        let tabs = sessions.values().map(|s| s.connections).sum();
        (sessions.len(), tabs)
    }

    /// Live sessions per worker slot, for least-loaded placement.
    pub fn load(&self, slots: usize) -> Vec<usize> {
        let inner = self.inner.lock().expect("registry lock");
        let mut load = vec![0; slots];
        for s in inner.sessions.values() {
            if let Some(l) = load.get_mut(s.worker) {
                *l += 1;
            }
        }
        load
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
