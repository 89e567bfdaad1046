//! State logs: recording user changes and turning them back into replay steps.
