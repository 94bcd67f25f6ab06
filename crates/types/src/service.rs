//! Service specs: what the operator declares. (Filled in by the services work.)
