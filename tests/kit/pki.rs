//! Certificates for TLS tests, made by the `openssl` command: a private CA and
//! certificates it signs for 127.0.0.1 and `localhost`.

use std::path::{Path, PathBuf};

/// Writes a CA (or uses `ca`: its certificate and key) and a certificate it signs for
/// 127.0.0.1 and `localhost` (a server) or a client. Returns (ca, cert, key) paths.
pub fn issue(dir: &Path, name: &str, ca: Option<(&Path, &Path)>) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_cert, ca_key) = match ca {
        Some((c, k)) => (c.to_owned(), k.to_owned()),
        None => {
            let (c, k) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &k,
                "-out",
                &c,
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
            ]);
            (dir.join(c), dir.join(k))
        }
    };
    let (cert, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        &format!("/CN={name}"),
    ]);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        ca_cert.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
    ]);
    (ca_cert, dir.join(cert), dir.join(key))
}
