//! The development CA: created once under the data directory, reused across restarts, and
//! issuing short-lived leaf certificates for the hosts configured with `source = "dev"`.
//! Trust its certificate (`ca.pem`) on a development machine and those hosts work over HTTPS
//! without warnings; see docs/tls.md.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;
use super::certs::{LoadedCert, certified};
use crate::spec::HostPattern;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
/// Ten years: trusting a CA by hand is a chore to repeat.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf certificates are kept in memory only and reissued at each start, and when a third of
/// their lifetime is left.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Issued slightly in the past so a clock a little behind still accepts a new certificate.
pub(super) const BACKDATE: Duration = Duration::from_secs(3600);

pub(crate) struct DevCa {
    pub(super) issuer: Issuer<'static, KeyPair>,
    pub(super) cert: CertificateDer<'static>,
    pub(crate) dir: PathBuf,
}

impl DevCa {
    /// Loads the CA from `dir`, or creates it when neither file exists. A half-present or
    /// unreadable CA is an error rather than silently replaced: a browser may trust it.
    pub(crate) fn load_or_create(dir: &Path, now: i64) -> Result<DevCa, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let err = |what: &str, e: &dyn std::fmt::Display| TlsError::DevCa {
            dir: dir.to_owned(),
            reason: format!("{what}: {e}"),
        };
        match (cert_path.exists(), key_path.exists()) {
            (false, false) => Self::create(dir, now),
            (true, true) => {
                let cert_pem = fs::read_to_string(&cert_path)
                    .map_err(|e| err(&format!("reading {}", cert_path.display()), &e))?;
                let key_pem = fs::read_to_string(&key_path)
                    .map_err(|e| err(&format!("reading {}", key_path.display()), &e))?;
                let mode = fs::metadata(&key_path).map_or(0, |m| m.permissions().mode());
                if mode & 0o077 != 0 {
                    tracing::warn!(key = %key_path.display(), mode = format!("{:o}", mode & 0o777), "the development CA key is readable by others; restricting it to 0600");
                    let _ = fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600));
                }
                let key = KeyPair::from_pem(&key_pem)
                    .map_err(|e| err(&format!("parsing {}", key_path.display()), &e))?;
                let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
                    .map_err(|e| {
                        err(
                            &format!("parsing {}", cert_path.display()),
                            &format!("{e:?}"),
                        )
                    })?;
                let issuer = Issuer::from_ca_cert_der(&der, key)
                    .map_err(|e| err(&format!("parsing {}", cert_path.display()), &e))?;
                Ok(DevCa {
                    issuer,
                    cert: der,
                    dir: dir.to_owned(),
                })
            }
            (cert, _) => {
                let (present, missing) = if cert {
                    (&cert_path, &key_path)
                } else {
                    (&key_path, &cert_path)
                };
                Err(TlsError::DevCa {
                    dir: dir.to_owned(),
                    reason: format!(
                        "{} exists but {} does not; remove {} to create a new development CA",
                        present.display(),
                        missing.display(),
                        present.display()
                    ),
                })
            }
        }
    }

    fn create(dir: &Path, now: i64) -> Result<DevCa, TlsError> {
        let err = |what: &str, e: &dyn std::fmt::Display| TlsError::DevCa {
            dir: dir.to_owned(),
            reason: format!("{what}: {e}"),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err("creating the directory", &e))?;
        let key = KeyPair::generate().map_err(|e| err("generating a key", &e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let id: u32 = rand::random();
        dn.push(DnType::OrganizationName, "berth");
        dn.push(DnType::CommonName, format!("berth development CA {id:08x}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = datetime(now - BACKDATE.as_secs() as i64);
        params.not_after = datetime(now + CA_LIFETIME.as_secs() as i64);
        let cert = params
            .self_signed(&key)
            .map_err(|e| err("signing the CA certificate", &e))?;
        // Key first, each through a temporary file, so a crash leaves either nothing usable
        // (and a clear error) or a complete CA.
        write_new(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )
        .map_err(|e| err("writing the key", &e))?;
        write_new(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), 0o644)
            .map_err(|e| err("writing the certificate", &e))?;
        tracing::info!(
            ca = %dir.join(CA_CERT_FILE).display(),
            "created a development CA; trust it to use the `dev` certificates without warnings (docs/tls.md)"
        );
        Ok(DevCa {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir: dir.to_owned(),
        })
    }

    /// A leaf certificate for `hosts`, valid for [`LEAF_LIFETIME`], chained to the CA, naming
    /// `crl_url` as its CRL distribution point.
    pub(crate) fn issue(
        &self,
        hosts: &[HostPattern],
        crl_url: Option<&str>,
        now: i64,
    ) -> Result<LoadedCert, TlsError> {
        let err = |e: &dyn std::fmt::Display| TlsError::DevCa {
            dir: self.dir.clone(),
            reason: format!("issuing a certificate: {e}"),
        };
        let names: Vec<String> = hosts
            .iter()
            .filter(|h| !matches!(h, HostPattern::Any))
            .map(HostPattern::to_string)
            .collect();
        let key = KeyPair::generate().map_err(|e| err(&e))?;
        let mut params = CertificateParams::new(names.clone()).map_err(|e| err(&e))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.crl_distribution_points = crl_url
            .map(|u| CrlDistributionPoint {
                uris: vec![u.to_owned()],
            })
            .into_iter()
            .collect();
        params.not_before = datetime(now - BACKDATE.as_secs() as i64);
        params.not_after = datetime(now + LEAF_LIFETIME.as_secs() as i64);
        let leaf = params.signed_by(&key, &self.issuer).map_err(|e| err(&e))?;
        let chain = vec![leaf.der().clone(), self.cert.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let label = self.dir.join(CA_CERT_FILE);
        certified(chain, key_der, &label, &label, now).map_err(|e| err(&e))
    }
}

pub(super) fn datetime(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Writes `bytes` to `path` through a temporary sibling created with `mode`, then renames.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::now_unix;

    #[test]
    fn the_ca_is_created_once_with_a_private_key_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls/dev-ca");
        let now = now_unix();
        let first = DevCa::load_or_create(&dir, now).unwrap();
        let key_mode = fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let again = DevCa::load_or_create(&dir, now).unwrap();
        assert_eq!(first.cert, again.cert);

        let hosts = [
            HostPattern::Exact("app.test".into()),
            HostPattern::Wildcard(".app.test".into()),
        ];
        let leaf = again.issue(&hosts, None, now).unwrap();
        assert_eq!(leaf.names, ["app.test", "*.app.test"]);
        assert!(leaf.covers(&HostPattern::Exact("x.app.test".into())));
        assert_eq!(
            leaf.seconds_left(now),
            LEAF_LIFETIME.as_secs() as i64,
            "valid for the leaf lifetime from now"
        );
        // The chain ends with the CA, so clients that trust ca.pem can verify it.
        assert_eq!(leaf.key.cert.last(), Some(&first.cert));
    }

    #[test]
    fn a_half_present_ca_is_an_error_not_silently_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        DevCa::load_or_create(tmp.path(), now_unix()).unwrap();
        fs::remove_file(tmp.path().join(CA_KEY_FILE)).unwrap();
        let e = DevCa::load_or_create(tmp.path(), now_unix())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not") && e.contains(CA_KEY_FILE), "{e}");
        assert!(tmp.path().join(CA_CERT_FILE).exists());
    }
}
