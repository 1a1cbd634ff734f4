//! The hybrid logical clock as the state uses it: moving the station's clock past a timestamp that came with a
//! record, and reading the wall-clock milliseconds of one.

use uhlc::{NTP64, Timestamp};

/// Moves `clock` past `hlc` (a no-op for 0); fails if `hlc` is further ahead of the local time than the clock's
/// maximum delta.
pub(crate) fn observe_hlc(clock: &uhlc::HLC, hlc: u64) -> Result<(), uhlc::ExceedingDeltaError> {
    if hlc == 0 {
        return Ok(());
    }
    clock.update_with_timestamp(&Timestamp::new(NTP64(hlc), *clock.get_id()))
}

/// Milliseconds since the Unix epoch of an NTP64 hybrid-logical-clock time.
pub(super) fn hlc_ms(hlc: u64) -> u64 {
    NTP64(hlc).to_duration().as_millis() as u64
}
