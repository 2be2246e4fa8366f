//! Frame render time of the dashboard (placeholder while the dashboard lands).

fn main() {}
