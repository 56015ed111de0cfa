//! Cases 1r and 3r: cases 1 and 3 with workers started by a command
//! launcher that connect back over loopback TCP with mutual TLS (feature
//! `remote`, which `cargo xtask bench` turns on), to compare with the local
//! rows measured in the same run.

use crate::cases::Bench;
use crate::stats::Samples;

#[cfg(feature = "remote")]
mod on {
    use loky::{ExecutorBuilder, Launcher, ProcessPoolExecutor, diagnostics};

    use crate::cases::{Bench, POOL, warm};
    use crate::stats::Samples;

    /// Runs the worker program itself: only the link differs from a local
    /// worker (and the launch, which the cold case includes).
    const LAUNCHER: &str = "{worker}";

    fn builder(bench: &Bench, workers: usize) -> ExecutorBuilder {
        bench
            .builder(workers)
            .launcher(Launcher::command(LAUNCHER))
            .listen("127.0.0.1:0".parse().expect("an address"))
    }

    pub(crate) fn cold_start(bench: &Bench) -> Samples {
        bench.cold_start_of(|| builder(bench, POOL).build())
    }

    pub(crate) fn round_trip(bench: &Bench) -> Samples {
        let ex: ProcessPoolExecutor = builder(bench, 1).build().map_err(|e| e.to_string())?;
        warm(&ex, 1).map_err(|e| e.to_string())?;
        bench.latency(|i| ex.submit(diagnostics::ECHO_I64, i))
    }
}

/// Case 1r: case 1 with a command launcher, over loopback TCP+TLS.
pub(crate) fn cold_start(bench: &Bench) -> Samples {
    #[cfg(feature = "remote")]
    return on::cold_start(bench);
    #[cfg(not(feature = "remote"))]
    return off(bench);
}

/// Case 3r: case 3 with a command launcher, over loopback TCP+TLS.
pub(crate) fn round_trip(bench: &Bench) -> Samples {
    #[cfg(feature = "remote")]
    return on::round_trip(bench);
    #[cfg(not(feature = "remote"))]
    return off(bench);
}

#[cfg(not(feature = "remote"))]
fn off(_: &Bench) -> Samples {
    Err("needs the feature remote (cargo xtask bench turns it on)".to_owned())
}
