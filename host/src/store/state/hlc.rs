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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn clock() -> uhlc::HLC {
        uhlc::HLCBuilder::new()
            .with_max_delta(Duration::from_millis(500))
            .build()
    }

    #[test]
    fn observing_a_later_timestamp_moves_the_clock_past_it() {
        let clock = clock();
        let ahead = clock.new_timestamp().get_time().as_u64() + (100u64 << 32) / 1000;
        observe_hlc(&clock, ahead).unwrap();
        assert!(clock.new_timestamp().get_time().as_u64() > ahead);
        // 0 is "no timestamp" (a record written before clocks), not a time to observe.
        observe_hlc(&clock, 0).unwrap();
    }

    #[test]
    fn a_timestamp_too_far_ahead_is_refused_and_leaves_the_clock_alone() {
        let clock = clock();
        let far = clock.new_timestamp().get_time().as_u64() + (3600u64 << 32);
        assert!(observe_hlc(&clock, far).is_err());
        assert!(clock.new_timestamp().get_time().as_u64() < far);
    }

    #[test]
    fn hlc_ms_reads_the_wall_clock_milliseconds_of_a_timestamp() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ms = hlc_ms(clock().new_timestamp().get_time().as_u64());
        assert!(ms.abs_diff(now_ms) < 1000, "{ms} vs {now_ms}");
    }
}
