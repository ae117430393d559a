import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.hazmat.primitives.serialization.ssh import load_ssh_public_key

from fedscene.cli.main import main
from fedscene.deploy.credentials import make_certificates, make_partner_key


def test_server_certificate_is_signed_by_the_ca_with_the_hosts_as_sans(tmp_path):
    paths = make_certificates(tmp_path, ["fl.example.org", "127.0.0.1", "::1"])
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert oct(paths.server_key.stat().st_mode)[-3:] == "600"


def test_partner_key_is_what_the_supernode_loads(tmp_path):
    private, public = make_partner_key(tmp_path, "acme")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert load_ssh_public_key(public.read_bytes()).public_numbers() == (
        key.public_key().public_numbers())


def test_cli_prints_both_sides_commands(tmp_path, capsys):
    assert main(["deploy", "certs", "--out", str(tmp_path / "c"), "--host", "localhost"]) == 0
    assert main(["deploy", "partner-key", "acme", "--out", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    assert main(["deploy", "coordinator", "--certs", str(tmp_path / "c"), "--address",
                 "localhost", "--key", str(tmp_path / "k" / "acme.pub")]) == 0
    out = capsys.readouterr().out
    assert "--enable-supernode-auth" in out and "flwr supernode register" in out
    assert "flwr run . fedscene" in out and '[superlink.fedscene]' in out
    assert out.index("fedscene deploy sign-app") < out.index("flwr run . fedscene")
    assert main(["deploy", "partner", "--superlink", "localhost:9092", "--ca",
                 str(tmp_path / "c" / "ca.crt"), "--key", str(tmp_path / "k" / "acme"),
                 "--scene", "Spain", "--data", "d.csv", "--state", "s"]) == 0
    out = capsys.readouterr().out
    assert "--root-certificates" in out and 'scene="Spain"' in out
    assert out.startswith("fedscene deploy serve --approval")
    assert "-- flower-supernode" in out and "--isolation process" in out
    assert main(["deploy", "certs", "--out", str(tmp_path / "x"), "--host", ""]) == 2
    assert "give one or more non-empty DNS names" in capsys.readouterr().out


def test_a_campaign_with_reproducible_noise_is_refused(tmp_path, capsys):
    campaign = tmp_path / "campaign.toml"
    campaign.write_text('[data]\nscenes = ["Spain"]\n[privacy]\nreproducible_noise = true\n')
    assert main(["deploy", "coordinator", "--certs", str(tmp_path), "--address", "localhost",
                 "--config", str(campaign)]) == 2
    out = capsys.readouterr().out
    assert "key 'privacy.reproducible_noise' is true" in out and "set it to false" in out
    assert "flwr run" not in out
