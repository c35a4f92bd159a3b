//! Runs the programs of a freshly loaded instance over one packet
//! (BPF_PROG_TEST_RUN, through aya): the golden tests and the benchmarks.

use aya::programs::{Program, SchedClassifier, TestRun as _, TestRunOptions, Xdp};
use tunnel_common::maps::{PROG_TAP6, PROG_TC, PROG_TC6, PROG_XDP_DECAP};

use super::{Dataplane, DataplaneError, Result};

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The program's return value (the verdict).
    pub retval: u32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
    /// Average run time in nanoseconds, as measured by the kernel.
    pub duration_ns: u32,
}

/// Room for what a program may add in front of the packet (outer headers,
/// XDP metadata).
const HEADROOM: usize = 256;

impl Dataplane {
    /// Runs the XDP program over `data`, `repeat` times (with more than
    /// one, the kernel reruns it on the buffer it already changed).
    pub fn test_run_xdp(&self, data: &[u8], repeat: u32) -> Result<TestRun> {
        let prog: &Xdp = self.program(PROG_XDP_DECAP)?.try_into()?;
        run(data, repeat, |opts| prog.test_run(opts))
    }

    /// Runs the tc program over `data` (a frame, from its Ethernet header).
    pub fn test_run_tc(&self, data: &[u8], repeat: u32) -> Result<TestRun> {
        let prog: &SchedClassifier = self.program(PROG_TC)?.try_into()?;
        run(data, repeat, |opts| prog.test_run(opts))
    }

    /// Runs `xtun_tc6` over `data` (a frame). It is loaded by the first
    /// `add_tunnel6`.
    pub fn test_run_tc6(&self, data: &[u8], repeat: u32) -> Result<TestRun> {
        let prog: &SchedClassifier = self.program(PROG_TC6)?.try_into()?;
        run(data, repeat, |opts| prog.test_run(opts))
    }

    /// Runs `xtun_tap6` over `data` (a frame). It is loaded by the first
    /// `add_tunnel6` of an ip6gretap link.
    pub fn test_run_tap6(&self, data: &[u8], repeat: u32) -> Result<TestRun> {
        let prog: &SchedClassifier = self.program(PROG_TAP6)?.try_into()?;
        run(data, repeat, |opts| prog.test_run(opts))
    }

    /// A program of the object this handle loaded (an instance found again
    /// has only descriptors, which aya cannot run).
    fn program(&self, name: &'static str) -> Result<&Program> {
        self._ebpf
            .as_ref()
            .and_then(|ebpf| ebpf.program(name))
            .ok_or(DataplaneError::Missing(name))
    }
}

fn run(
    data: &[u8],
    repeat: u32,
    test_run: impl FnOnce(
        TestRunOptions<'_>,
    ) -> std::result::Result<
        aya::programs::TestRunResult,
        aya::programs::ProgramError,
    >,
) -> Result<TestRun> {
    let mut out = vec![0u8; data.len() + HEADROOM];
    let result = test_run(TestRunOptions {
        data_in: Some(data),
        data_out: Some(&mut out),
        repeat,
        ..TestRunOptions::default()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRun {
        retval: result.return_value,
        data: out,
        duration_ns: u32::try_from(result.duration.as_nanos()).unwrap_or(u32::MAX),
    })
}
