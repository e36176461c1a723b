//! What makes a booted guest one VM in particular: the host's [`Activation`], sent once to the
//! agent of a guest waiting at its template point ([`crate::ports::TEMPLATE_READY`]), cold
//! booted or restored from a snapshot alike (docs/agent-protocol.md).
//!
//! Everything that differs from one VM to the next travels here, never on the kernel command
//! line nor in a snapshot: the guest parameters (console, shell, overlay disk, volumes,
//! network), the environment, fresh entropy for the kernel's RNG, the wall clock, the
//! hostname and the Ethernet address. A template can therefore serve every VM of its kernel,
//! image and shape, and two VMs restored from one snapshot share no secret and no identity.

use std::fmt;

use crate::env::EnvVar;
use crate::params::GuestParams;

/// Fewest bytes of entropy an activation carries: the guest's kernel RNG is reseeded with
/// them before anything else runs.
pub const MIN_ENTROPY: usize = 32;
/// Most bytes of entropy an activation carries.
pub const MAX_ENTROPY: usize = 512;
/// Longest hostname (the kernel's `__NEW_UTS_LEN`).
pub const MAX_HOSTNAME: usize = 64;

/// The host's activation of one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The `nodeos.*` parameters of this VM (its `agent` transport is the template's, already
    /// running, and ignored here).
    pub params: GuestParams,
    /// Added to the environment of every command the agent runs and of the shell PID 1 runs
    /// (contract::env).
    pub env: Vec<EnvVar>,
    /// Host randomness, [`MIN_ENTROPY`]..=[`MAX_ENTROPY`] bytes.
    pub entropy: Vec<u8>,
    /// The host's wall clock: seconds and nanoseconds since the Unix epoch.
    pub clock: (u64, u32),
    /// The guest's hostname: 1..=[`MAX_HOSTNAME`] letters, digits, `-` and `.`.
    pub hostname: String,
    /// The Ethernet address of its network interface (when it has one): unicast, not zero.
    pub mac: [u8; 6],
}

/// A field of an [`Activation`] the guest does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationError(String);

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "activation: {}", self.0)
    }
}

impl std::error::Error for ActivationError {}

/// Valid activations only, as a host can send them.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Activation {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let params: String = u.arbitrary()?;
        let params = GuestParams::parse(&params).map_err(|_| arbitrary::Error::IncorrectFormat)?;
        let entropy_len = u.int_in_range(MIN_ENTROPY..=MAX_ENTROPY)?;
        let activation = Activation {
            params,
            env: u.arbitrary()?,
            entropy: u.bytes(entropy_len)?.to_vec(),
            clock: (u.arbitrary()?, u.int_in_range(0..=999_999_999)?),
            hostname: format!("h{}", u.arbitrary::<u32>()?),
            mac: u.arbitrary()?,
        };
        activation
            .validate()
            .map_err(|_| arbitrary::Error::IncorrectFormat)?;
        Ok(activation)
    }
}

impl Activation {
    /// Checks every field as the guest does: the parameters through their own checks, the
    /// entropy's length, the clock's nanoseconds and the hostname's characters.
    pub fn validate(&self) -> Result<(), ActivationError> {
        self.params
            .validate()
            .map_err(|e| ActivationError(e.to_string()))?;
        if !(MIN_ENTROPY..=MAX_ENTROPY).contains(&self.entropy.len()) {
            return Err(ActivationError(format!(
                "{} bytes of entropy; {MIN_ENTROPY}..={MAX_ENTROPY} expected",
                self.entropy.len()
            )));
        }
        if self.clock.1 >= 1_000_000_000 {
            return Err(ActivationError(format!(
                "clock nanoseconds {} are a second or more",
                self.clock.1
            )));
        }
        check_hostname(&self.hostname).map_err(ActivationError)?;
        check_mac(&self.mac).map_err(ActivationError)
    }
}

fn check_mac(mac: &[u8; 6]) -> Result<(), String> {
    if mac[0] & 1 == 1 || mac == &[0; 6] {
        return Err(format!(
            "Ethernet address {} is not a unicast one",
            mac_text(mac)
        ));
    }
    Ok(())
}

/// An Ethernet address as `02:1f:2e:3d:4c:5b`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    let bytes: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    bytes.join(":")
}

/// Whether `name` is a hostname the guest takes: 1..=[`MAX_HOSTNAME`] letters, digits, `-` and
/// `.`; why not when it is not.
pub fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HOSTNAME {
        return Err(format!(
            "hostname of {} bytes; 1..={MAX_HOSTNAME} expected",
            name.len()
        ));
    }
    match name
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.'))
    {
        Some(b) => Err(format!("hostname holds the byte {b:#04x}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation() -> Activation {
        Activation {
            params: GuestParams::default(),
            env: Vec::new(),
            entropy: vec![7; MIN_ENTROPY],
            clock: (1_764_900_000, 999_999_999),
            hostname: "nodeos-1f2e".into(),
            mac: [0x02, 0x1f, 0x2e, 0x3d, 0x4c, 0x5b],
        }
    }

    #[test]
    fn each_field_is_checked() {
        assert_eq!(activation().validate(), Ok(()));
        let bad = |f: fn(&mut Activation)| {
            let mut a = activation();
            f(&mut a);
            a.validate().unwrap_err().to_string()
        };
        assert!(bad(|a| a.entropy.truncate(31)).contains("31 bytes of entropy"));
        assert!(bad(|a| a.entropy = vec![0; MAX_ENTROPY + 1]).contains("513 bytes"));
        assert!(bad(|a| a.clock.1 = 1_000_000_000).contains("nanoseconds"));
        assert!(bad(|a| a.hostname.clear()).contains("hostname of 0 bytes"));
        assert!(bad(|a| a.hostname = "a".repeat(65)).contains("hostname of 65 bytes"));
        assert!(bad(|a| a.mac[0] = 0x03).contains("03:1f:2e:3d:4c:5b is not a unicast"));
        assert!(bad(|a| a.mac = [0; 6]).contains("00:00:00:00:00:00"));
        assert!(bad(|a| a.hostname = "a b".into()).contains("0x20"));
        assert!(bad(|a| a.params.cols = Some(0)).contains("nodeos.cols=0"));
    }
}
