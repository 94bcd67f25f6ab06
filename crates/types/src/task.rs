//! Tasks and their state machine. (Filled in by the services work.)
