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
    }
}

fn page(r: &Registry, u: &UserId, id: &str, now: Instant) -> Page {
    r.page(u, "app", &cx(now, &gen1, false), || id.to_owned())
}

#[tokio::test(start_paused = true)]
async fn past_the_session_bound_only_new_sessions_are_refused() {
    let r = Registry::new(TTL, 2);
    let (a, b, c) = (UserId::random(), UserId::random(), UserId::random());
    let t0 = Instant::now();
    assert!(matches!(page(&r, &a, "sa", t0), Page::Fresh { .. }));
    assert!(matches!(page(&r, &b, "sb", t0), Page::Fresh { .. }));
    assert_eq!(page(&r, &c, "sc", t0), Page::Full);
    // A returning user with saved state is restored all the same.
    assert!(matches!(
        r.page(&c, "app", &cx(t0, &gen1, true), || "sc-restored".into()),
        Page::Fresh { .. }
    ));
    // A user who has a session still gets it back.
    let later = t0 + RESERVATION;
    assert!(matches!(page(&r, &a, "sa2", later), Page::Reattach { .. }));
    // Sessions past their TTL make room again.
    assert!(matches!(
        page(&r, &c, "sc", t0 + TTL + RESERVATION),
        Page::Fresh { .. }
    ));
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
