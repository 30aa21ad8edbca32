"""Update signing keys: a CA whose certificate every image trusts, and a key it certifies that
signs release bundles.

Two levels, as RAUC recommends: the CA key signs nothing but signing certificates and can stay
offline; a leaked or expiring signing key is replaced by issuing a new one (`smartos keys init
--renew-signing`) without touching a single device. Keys live outside the repository, by default
in $XDG_CONFIG_HOME/smartos/keys (~/.config/smartos/keys); tests make throwaway ones.

EC P-256 keys made with openssl (every build host has it; RAUC verifies through OpenSSL too). The
signing certificate carries extendedKeyUsage=codeSigning, and both sides check that purpose
(RAUC's keyring check-purpose=codesign): a TLS or e-mail certificate from the same CA cannot sign
an update.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SmartOSError
from .run import run

CA_DAYS = 20 * 365       # the devices' trust anchor: outlives the hardware
SIGNING_DAYS = 5 * 365   # renewed with --renew-signing; devices need nothing new
SIGNING_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def default_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "smartos" / "keys"


@dataclass(frozen=True)
class Keys:
    directory: Path

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key.pem"

    @property
    def ca_cert(self) -> Path:
        """The keyring: baked into every image (/etc/rauc/keyring.pem)."""
        return self.directory / "ca.cert.pem"

    @property
    def signing_key(self) -> Path:
        return self.directory / "signing.key.pem"

    @property
    def signing_cert(self) -> Path:
        return self.directory / "signing.cert.pem"

    def require_signing(self) -> None:
        """Raise unless a signing key and certificate exist here."""
        for path in (self.signing_key, self.signing_cert, self.ca_cert):
            if not path.is_file():
                raise SmartOSError(f"no update signing key: {path} does not exist",
                                   hint=f"make one with: smartos keys init --dir {self.directory}")


def init(directory: Path, organization: str, renew_signing: bool = False) -> Keys:
    """Make the CA (unless it exists and only the signing key is renewed) and a signing key.

    Never overwrites a CA: devices in the field trust it, and a new one would lock them out.
    """
    keys = Keys(directory)
    if keys.ca_key.exists() and not renew_signing:
        raise SmartOSError(f"{keys.ca_key} already exists: devices built with it trust only it",
                           hint="keep it; `smartos keys init --renew-signing` issues a new signing "
                                "key from it, or pass --dir for a separate key set")
    if renew_signing and not keys.ca_key.exists():
        raise SmartOSError(f"--renew-signing: no CA in {directory} to issue a signing key from",
                           hint=f"smartos keys init --dir {directory}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    previous = os.umask(0o077)  # private keys: the owner only, from their first byte
    try:
        _make(keys, organization)
    finally:
        os.umask(previous)
    return keys


def _make(keys: Keys, organization: str) -> None:
    directory = keys.directory
    if not keys.ca_key.exists():
        _tmp = keys.ca_key.with_suffix(".tmp")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", _tmp, "-out", keys.ca_cert, "-days", str(CA_DAYS),
             "-subj", f"/O={organization}/CN={organization} update CA",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"], capture=True)
        _tmp.rename(keys.ca_key)
        keys.ca_cert.chmod(0o644)
    csr = directory / "signing.csr.tmp"
    key_tmp = directory / "signing.key.tmp"
    ext = directory / "signing.ext.tmp"
    cert_tmp = directory / "signing.cert.tmp"
    try:
        ext.write_text(SIGNING_EXTENSIONS)
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key_tmp, "-out", csr,
             "-subj", f"/O={organization}/CN={organization} release signing"], capture=True)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", keys.ca_cert, "-CAkey", keys.ca_key,
             "-set_serial", f"0x{os.urandom(16).hex()}", "-days", str(SIGNING_DAYS),
             "-extfile", ext, "-out", cert_tmp], capture=True)
        key_tmp.rename(keys.signing_key)
        cert_tmp.rename(keys.signing_cert)
        keys.signing_cert.chmod(0o644)
    finally:
        for leftover in (csr, key_tmp, ext, cert_tmp):
            leftover.unlink(missing_ok=True)


def describe(keys: Keys) -> dict[str, str]:
    """Subject, validity and fingerprint of the CA and the signing certificate."""
    out: dict[str, str] = {}
    for name, cert in (("ca", keys.ca_cert), ("signing", keys.signing_cert)):
        if cert.is_file():
            text = run(["openssl", "x509", "-in", cert, "-noout", "-subject", "-enddate",
                        "-fingerprint", "-sha256"], capture=True).stdout
            out[name] = " | ".join(line.strip() for line in text.splitlines())
    return out
