//! The host's activation of a guest (contract::activation), made at the moment it is sent: the
//! VM's parameters, environment and hostname ([`Identity`]), fresh entropy from the host, the
//! host's clock, and an Ethernet address of the VM's own (and a hostname, when it was given
//! none).

use std::time::SystemTime;

use contract::activation::Activation;
use contract::env::EnvVar;
use contract::params::GuestParams;
use vmm::vm::VmConfig;

/// Bytes of entropy each guest gets: a full reseed of its kernel's CRNG (32 bytes) twice over.
const ENTROPY: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("drawing entropy for the guest from the host")]
pub struct EntropyError(#[source] getrandom::Error);

/// What a VM's configuration makes it, for its activation.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub params: GuestParams,
    pub env: Vec<EnvVar>,
    /// Its hostname, checked; one of its own (`nodeos-` and six hex digits) without.
    pub hostname: Option<String>,
}

impl Identity {
    pub fn of(config: &VmConfig) -> Identity {
        Identity {
            params: config.guest_params(),
            env: config.env.clone(),
            hostname: config.hostname.clone(),
        }
    }
}

/// The activation of the VM `identity` describes, as of now.
pub fn new(identity: &Identity) -> Result<Activation, EntropyError> {
    let mut entropy = vec![0u8; ENTROPY];
    getrandom::fill(&mut entropy).map_err(EntropyError)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let hostname = identity.hostname.clone().unwrap_or_else(|| {
        format!(
            "nodeos-{}",
            entropy[..3]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    });
    let mut mac = [0u8; 6];
    getrandom::fill(&mut mac).map_err(EntropyError)?;
    // Locally administered, unicast.
    mac[0] = (mac[0] & 0xfc) | 0x02;
    // The hostname's bytes are public; the guest's RNG gets fresh ones in their place.
    getrandom::fill(&mut entropy[..3]).map_err(EntropyError)?;
    Ok(Activation {
        params: identity.params.clone(),
        env: identity.env.clone(),
        entropy,
        clock: (now.as_secs(), now.subsec_nanos()),
        hostname,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_activation_is_fresh_and_valid() {
        let a = new(&Identity::default()).unwrap();
        let b = new(&Identity::default()).unwrap();
        assert_eq!(a.validate(), Ok(()));
        assert_ne!(a.entropy, b.entropy);
        assert_ne!(a.hostname, b.hostname);
        assert_ne!(a.mac, b.mac);
        assert_eq!(a.mac[0] & 0x03, 0x02, "locally administered, unicast");
        assert!(a.hostname.starts_with("nodeos-") && a.hostname.len() == 13);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(a.clock.0) < 5);
    }

    #[test]
    fn a_given_hostname_is_the_guests() {
        let identity = Identity {
            hostname: Some("web-1".into()),
            ..Identity::default()
        };
        let a = new(&identity).unwrap();
        assert_eq!(a.hostname, "web-1");
        assert_eq!(a.validate(), Ok(()));
    }
}
