//! Delivery of deployment events to notifiers, off the run's path.
//!
//! The engine hands an event to a [`Dispatcher`] (the notifiers of one
//! pipeline or environment) and moves on at once: each notifier's delivery
//! is queued in the store, then tried in the background by the notifier's
//! lane of the [`Queue`]. What it guarantees:
//!
//! * **Never holds or fails a run.** Sending costs one store write; a slow
//!   or broken notifier delays only its own later deliveries.
//! * **Retries.** A failure that may pass (the plugin's own error, such as
//!   a refused or rate-limited request, or a time limit) is tried again
//!   with exponential backoff ([`RetryPolicy`]); one that will not (a
//!   denied capability, rejected parameters, a crash, the memory limit) is
//!   given up at once.
//! * **Recorded when it ends.** Sent or given up, a delivery leaves the
//!   queue and its `notification` entry (notifier, attempts, error) is
//!   appended to the run's log in the same write, possibly after the run
//!   has finished.
//! * **Order per notifier per run.** A notifier gets a run's events one at
//!   a time, in the order they were sent: the next is not tried before the
//!   one before it has ended. Runs do not wait for each other.
//! * **Bounded.** A notifier holds at most [`QueueOptions::capacity`]
//!   pending deliveries over all runs; past that a new delivery is refused:
//!   logged as an error and recorded at once as given up after 0 attempts.
//!   Its tries in flight at once are bounded by
//!   [`QueueOptions::concurrency`].
//! * **Survives a restart.** What is still queued when a host stops (or
//!   dies) is delivered by the next one, [`Queue::resume`], in the order it
//!   was queued. A delivery cut off mid-try is tried again from its first
//!   attempt, so a notifier may get an event twice: delivery is at least
//!   once.

mod queue;
mod retry;

pub use queue::{Dispatcher, Queue, QueueOptions, UnknownNotifier};
pub use retry::RetryPolicy;
