//! The registry's decisions, with paused time: reattach, reserve, expire, restore, bound.

use super::*;

const TTL: Duration = Duration::from_secs(3600);

fn gen1(_: usize) -> u64 {
    1
}

fn cx(now: Instant, generation: &dyn Generations, has_state: bool) -> Context<'_> {
    Context {
        now,
        generation,
        worker: 0,
        has_state,
        may_wait: false,
        make_room: false,
    }
}

fn page(r: &Registry, u: &UserId, id: &str, now: Instant) -> Page {
    r.page(u, "app", &cx(now, &gen1, false), || id.to_owned())
}

/// Opens a tab on a new session of `u` with id `id`; returns whether it was made.
fn open(r: &Registry, u: &UserId, id: &str, now: Instant) -> bool {
    let made = matches!(page(r, u, id, now), Page::Fresh { .. });
    if made {
        r.connect(id, u, "app", &cx(now, &gen1, false));
    }
    made
}

/// The ids of the sessions evicted so far, in order.
fn evicted(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Eviction>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.session_id)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn past_the_session_bound_the_least_recently_used_idle_session_makes_room() {
    let r = Registry::new(TTL, 3);
    let mut rx = r.evictions().unwrap();
    let users: Vec<UserId> = (0..6).map(|_| UserId::random()).collect();
    let t0 = Instant::now();
    for (i, u) in users[..3].iter().enumerate() {
        assert!(open(&r, u, &format!("s{i}"), t0));
    }
    // s1 was left first, then s0; s2 is still open.
    r.disconnect("s1", t0 + Duration::from_secs(1));
    r.disconnect("s0", t0 + Duration::from_secs(2));
    let t1 = t0 + Duration::from_secs(3);
    assert!(open(&r, &users[3], "s3", t1));
    assert_eq!(evicted(&mut rx), ["s1"]);
    assert!(open(&r, &users[4], "s4", t1));
    assert_eq!(evicted(&mut rx), ["s0"]);
    // Every session is connected: now a new visitor is refused...
    assert_eq!(page(&r, &users[5], "s5", t1), Page::Full);
    assert!(evicted(&mut rx).is_empty());
    // ...but a returning user with saved state is restored all the same.
    assert!(matches!(
        r.page(&users[0], "app", &cx(t1, &gen1, true), || "s0-restored"
            .into()),
        Page::Fresh { .. }
    ));
    // The evicted user's next visit gets a new session (restored from their state), not the
    // dropped one.
    r.disconnect("s4", t1);
    match r.page(&users[1], "app", &cx(t1, &gen1, true), || "s1-new".into()) {
        Page::Fresh { session_id, .. } => assert_eq!(session_id, "s1-new"),
        other => panic!("{other:?}"),
    }
    assert_eq!(evicted(&mut rx), ["s4"]);
}

#[tokio::test(start_paused = true)]
async fn a_page_not_yet_connected_is_evicted_only_after_every_idle_session() {
    let r = Registry::new(TTL, 2);
    let mut rx = r.evictions().unwrap();
    let (a, b, c, d) = (
        UserId::random(),
        UserId::random(),
        UserId::random(),
        UserId::random(),
    );
    let t0 = Instant::now();
    assert!(open(&r, &a, "sa", t0));
    r.disconnect("sa", t0);
    // A page was served for b; its websocket has not come yet.
    assert!(matches!(page(&r, &b, "sb", t0), Page::Fresh { .. }));
    let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
    assert!(matches!(page(&r, &c, "sc", t1), Page::Fresh { .. }));
    assert_eq!(evicted(&mut rx), ["sa"], "the idle session first");
    assert!(matches!(page(&r, &d, "sd", t2), Page::Fresh { .. }));
    assert_eq!(evicted(&mut rx), ["sb"], "then the oldest reservation");
    // b's websocket still gets a session: a new one, restored if b has state.
    let attach = r.connect("sb", &b, "app", &cx(t2, &gen1, true));
    assert!(attach.restore);
}

#[tokio::test(start_paused = true)]
async fn a_worker_out_of_memory_drops_its_own_idle_sessions_least_recently_used_first() {
    let r = Registry::new(TTL, 100);
    let mut rx = r.evictions().unwrap();
    let t0 = Instant::now();
    let on = |w: usize, id: &str, t: Instant| {
        let u = UserId::random();
        let cx = Context {
            worker: w,
            ..cx(t, &gen1, false)
        };
        assert!(matches!(
            r.page(&u, "app", &cx, || id.into()),
            Page::Fresh { .. }
        ));
        r.connect(id, &u, "app", &cx);
        r.disconnect(id, t);
    };
    on(0, "w0-old", t0);
    on(1, "w1-oldest", t0);
    on(0, "w0-new", t0 + Duration::from_secs(5));
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(r.evict(Some(0), 1, Why::Memory, t1), 1);
    assert_eq!(
        evicted(&mut rx),
        ["w0-old"],
        "worker 1's older session is not its to drop"
    );
    // A page placed on a worker with no room drops one of that worker's idle sessions.
    let u = UserId::random();
    let full = Context {
        worker: 0,
        make_room: true,
        ..cx(t1, &gen1, false)
    };
    assert!(matches!(
        r.page(&u, "app", &full, || "w0-next".into()),
        Page::Fresh { freed: true, .. }
    ));
    assert_eq!(evicted(&mut rx), ["w0-new"]);
    r.connect("w0-next", &u, "app", &full);
    // Nothing idle on it any more: a new visitor is refused, a returning one restored.
    assert_eq!(
        r.page(&UserId::random(), "app", &full, || "x".into()),
        Page::Full
    );
    let returning = Context {
        has_state: true,
        ..full
    };
    assert!(
        matches!(
            r.page(&UserId::random(), "app", &returning, || "y".into()),
            Page::Fresh { freed: false, .. }
        ),
        "served with nothing dropped, so there is nothing to wait for"
    );
    assert_eq!(
        r.evict(Some(0), 5, Why::Memory, t1),
        1,
        "only y is unconnected"
    );
    assert_eq!(evicted(&mut rx), ["y"]);
}

#[tokio::test(start_paused = true)]
async fn versions_of_histories_no_session_shows_are_dropped() {
    let r = Registry::new(TTL, 100_000);
    let t0 = Instant::now();
    let users: Vec<UserId> = (0..2 * VERSIONS_SLACK).map(|_| UserId::random()).collect();
    for (i, u) in users.iter().enumerate() {
        let id = format!("s{i}");
        page(&r, u, &id, t0);
        r.connect(&id, u, "app", &cx(t0, &gen1, false));
        r.recorded(&id, 1);
        r.disconnect(&id, t0);
    }
    let kept = &users[0];
    let later = t0 + TTL / 2;
    page(&r, kept, "k", later);
    r.connect("k", kept, "app", &cx(later, &gen1, false));
    r.recorded("k", 1);
    r.disconnect("k", later);
    assert_eq!(r.inner.lock().unwrap().versions.len(), users.len());
    // Everyone else's sessions expire; the next page prunes their versions.
    let expired = t0 + TTL + RESERVATION;
    assert!(matches!(
        page(&r, kept, "x", expired),
        Page::Reattach { .. }
    ));
    assert_eq!(r.inner.lock().unwrap().versions.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reopen_reattaches_only_when_idle() {
    let r = Registry::new(TTL, 1000);
    let u = UserId::random();
    let t0 = Instant::now();
    assert!(matches!(page(&r, &u, "s1", t0), Page::Fresh { .. }));
    // The page's websocket connects; a second tab meanwhile gets its own session.
    r.connect("s1", &u, "app", &cx(t0, &gen1, false));
    assert!(matches!(page(&r, &u, "s2", t0), Page::Fresh { session_id, .. } if session_id == "s2"));
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
    let r = Registry::new(TTL, 1000);
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
    let r = Registry::new(TTL, 1000);
    let (a, b) = (UserId::random(), UserId::random());
    let t0 = Instant::now();
    page(&r, &a, "sa", t0);
    r.connect("sa", &a, "app", &cx(t0, &gen1, false));
    r.disconnect("sa", t0);
    assert!(matches!(page(&r, &b, "sb", t0), Page::Fresh { .. }));
}

#[tokio::test(start_paused = true)]
async fn worker_restart_means_restore() {
    let r = Registry::new(TTL, 1000);
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

#[tokio::test(start_paused = true)]
async fn only_an_up_to_date_session_is_reattached() {
    let r = Registry::new(TTL, 1000);
    let u = UserId::random();
    let t0 = Instant::now();
    page(&r, &u, "s1", t0);
    r.connect("s1", &u, "app", &cx(t0, &gen1, false));
    // A reload: the new page arrives while s1 is still connected.
    let mut waiting = cx(t0, &gen1, true);
    waiting.may_wait = true;
    assert_eq!(r.page(&u, "app", &waiting, || "x".into()), Page::Busy);
    // Past the wait, a second tab gets its own session, restored from the history.
    let p = r.page(&u, "app", &cx(t0, &gen1, true), || "s2".into());
    assert!(matches!(p, Page::Fresh { .. }));
    assert!(r.connect("s2", &u, "app", &cx(t0, &gen1, true)).restore);
    // Tab 2 records a change; tab 1 (s1) is now behind.
    r.recorded("s2", 1);
    r.disconnect("s1", t0);
    r.disconnect("s2", t0 + Duration::from_secs(1));
    let later = t0 + Duration::from_secs(2);
    assert_eq!(
        page(&r, &u, "s3", later),
        Page::Reattach {
            session_id: "s2".into(),
            worker: 0
        },
        "the session with the newest history, never the stale one"
    );
    // With s2 reserved, the stale s1 is still not offered: a restored one is made.
    assert!(matches!(page(&r, &u, "s4", later), Page::Fresh { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_worker_over_its_bound_with_no_session_still_serves() {
    let r = Registry::new(TTL, 100);
    let t0 = Instant::now();
    let full = Context {
        worker: 1,
        make_room: true,
        ..cx(t0, &gen1, false)
    };
    // Refusing cannot bring it under: the bound is below the worker itself.
    assert!(matches!(
        r.page(&UserId::random(), "app", &full, || "first".into()),
        Page::Fresh { .. }
    ));
    r.connect("first", &UserId::random(), "app", &full);
    assert_eq!(
        r.page(&UserId::random(), "app", &full, || "second".into()),
        Page::Full
    );
}
