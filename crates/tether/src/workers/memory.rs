//! `--worker-memory`: a bound on each worker's resident memory, kept by dropping idle live
//! sessions, least recently used first. Every user can be restored, so an idle live session
//! is only a speed-up; memory is what runs out.
//!
//! A worker's memory is read at every new page and every [`super::MEMORY_SAMPLE`], but a
//! session the worker is still building is not in it yet, so it is predicted: the reading
//! plus what each session added since, at the worker's own measured cost per session.

/// What is known of one worker slot's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge {
    /// Resident bytes at the last sample (0: none yet).
    rss: u64,
    /// Live sessions on the slot at that sample.
    sessions: usize,
    /// The lowest reading with at least one session, and its sessions. A worker's first
    /// session also pays for the imports it triggers, so a session's cost is measured from
    /// here, not from the worker's memory before any session.
    floor: Option<(u64, usize)>,
    /// The generation of the process the readings are of: a new one starts afresh.
    generation: u64,
    /// Bytes each further session adds, as last measured; 0 until measured.
    per_session: u64,
}

/// No session is taken to cost less than this, so a noisy sample cannot make the bound lax.
const MIN_PER_SESSION: u64 = 64 << 10;
/// Sessions beyond the floor's before their cost is measured: fewer drown in the noise.
const MIN_SPREAD: usize = 4;

impl Gauge {
    /// A new reading: `rss` resident bytes with `sessions` live sessions, of the slot's
    /// process of `generation`.
    pub fn observe(&mut self, rss: u64, generation: u64, sessions: usize) {
        if rss == 0 {
            return;
        }
        if generation != self.generation {
            *self = Gauge {
                generation,
                ..Gauge::default()
            };
        }
        if sessions > 0 && self.floor.is_none_or(|(low, _)| rss < low) {
            self.floor = Some((rss, sessions));
        }
        if let Some((low, at)) = self.floor {
            if sessions >= at + MIN_SPREAD {
                let per = rss.saturating_sub(low) / (sessions - at) as u64;
                self.per_session = per.max(MIN_PER_SESSION);
            }
        }
        self.rss = rss;
        self.sessions = sessions;
    }

    /// The bytes each further live session is measured to add (0: not yet known).
    pub fn per_session(&self) -> u64 {
        self.per_session
    }

    /// The memory predicted with `sessions` live sessions now.
    pub fn predicted(&self, sessions: usize) -> u64 {
        let more = sessions as i64 - self.sessions as i64;
        let delta = more.unsigned_abs() * self.per_session;
        if more >= 0 {
            self.rss + delta
        } else {
            self.rss.saturating_sub(delta)
        }
    }

    /// Whether one more session fits under `bound` beside `sessions` live ones, leaving room
    /// for one more yet: when a new session takes an idle one's place, the worker may build
    /// the new one before it has freed the old.
    pub fn has_room(&self, bound: u64, sessions: usize) -> bool {
        self.rss == 0 || self.predicted(sessions) + 2 * self.per_session <= bound
    }

    /// How many of `sessions` live sessions must go to bring the prediction under `bound`
    /// less one session's room (see [`Gauge::has_room`]): at least one while it is over, all
    /// of them at most.
    pub fn excess(&self, bound: u64, sessions: usize) -> usize {
        let predicted = self.predicted(sessions);
        let target = bound.saturating_sub(self.per_session);
        if self.rss == 0 || predicted <= target {
            return 0;
        }
        let over = predicted - target;
        let n = match self.per_session {
            0 => 1,
            per => over.div_ceil(per) as usize,
        };
        n.clamp(1, sessions.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_cost_of_a_session_is_learned_beyond_the_first_and_predicts_between_samples() {
        let mut g = Gauge::default();
        // Nothing read yet: nothing is refused on a guess.
        assert!(g.has_room(100 * MIB, 0));
        assert_eq!(g.excess(100 * MIB, 5), 0);
        g.observe(40 * MIB, 1, 0);
        // The first session costs its imports too: 20 MiB, not what a session costs.
        g.observe(60 * MIB, 1, 1);
        g.observe(62 * MIB, 1, 2);
        assert_eq!(g.per_session(), 0, "too few sessions to tell");
        g.observe(70 * MIB, 1, 5);
        assert_eq!(g.per_session(), 5 * MIB / 2);
        // 4 more sessions since the sample: 70 + 10 MiB.
        assert_eq!(g.predicted(9), 80 * MIB);
        // Room for one more and the one after it: 80 + 2 × 2.5 MiB.
        assert!(g.has_room(85 * MIB, 9));
        assert!(!g.has_room(84 * MIB, 9));
        // Sessions dropped since the sample lower the prediction before the worker shows it.
        assert_eq!(g.predicted(1), 60 * MIB);
        // A new process starts afresh.
        g.observe(41 * MIB, 2, 0);
        assert_eq!(g.per_session(), 0);
    }

    #[test]
    fn a_worker_over_its_bound_sheds_enough_sessions_to_come_under_it() {
        let mut g = Gauge::default();
        g.observe(50 * MIB, 1, 2);
        g.observe(90 * MIB, 1, 10);
        assert_eq!(g.per_session(), 5 * MIB);
        // One session's room is kept under the bound.
        assert_eq!(
            g.excess(95 * MIB, 10),
            0,
            "at the bound less one is not over it"
        );
        assert_eq!(g.excess(84 * MIB, 10), 3, "11 MiB over at 5 MiB a session");
        assert_eq!(g.excess(10 * MIB, 10), 10, "never more than there are");
        // Before a session's cost is known, one at a time.
        let mut g = Gauge::default();
        g.observe(100 * MIB, 1, 3);
        assert_eq!(g.excess(90 * MIB, 3), 1);
    }

    #[test]
    fn a_noisy_sample_cannot_make_a_session_free() {
        let mut g = Gauge::default();
        g.observe(50 * MIB, 1, 1);
        g.observe(49 * MIB, 1, 1);
        g.observe(49 * MIB, 1, 6);
        assert_eq!(g.per_session(), MIN_PER_SESSION);
    }
}
