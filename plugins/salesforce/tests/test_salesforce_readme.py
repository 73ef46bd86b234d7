"""The README's TOML examples are valid configurations, and every Config key is documented."""
import re
import tomllib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hub.testing import make_destination

from hub_salesforce.config import FollowUpConfig, OpportunityConfig, SalesforceConfig

README = (Path(__file__).parent.parent / "README.md").read_text()
COMMON = {"type", "enabled", "when", "events"}


def resolve(node, pem):
    """Stand in for the hub's secret resolution: { env = ... } / { file = ... } -> a value."""
    if isinstance(node, dict) and set(node) == {"env"}:
        return f"value-of-{node['env']}"
    if isinstance(node, dict) and set(node) == {"file"}:
        return pem
    if isinstance(node, dict):
        return {k: resolve(v, pem) for k, v in node.items()}
    return node


def test_every_toml_example_loads():
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    blocks = re.findall(r"```toml\n(.*?)```", README, re.S)
    assert len(blocks) == 2
    loaded = {}
    for block in blocks:
        for name, table in tomllib.loads(block)["destinations"].items():
            options = {k: v for k, v in resolve(table, pem).items() if k not in COMMON}
            loaded[name] = make_destination("salesforce", options, name=name)
    assert loaded["salesforce"].config["follow_up"]["priority"].rules["High"].expression == "analysis.sentiment <= 3"
    assert loaded["salesforce"].config["opportunity"]["stage"] == "Qualification"
    assert loaded["salesforce_jwt"].config["auth"] == "jwt"


def test_every_key_is_documented():
    for schema, prefix in ((SalesforceConfig, ""), (FollowUpConfig, "follow_up."), (OpportunityConfig, "opportunity.")):
        for name, field in schema().fields.items():
            key = field.data_key or name
            if key in ("follow_up", "opportunity"):  # tables: documented key by key
                continue
            assert f"`{prefix}{key}`" in README or (prefix and f"`.{key}`" in README), f"{prefix}{key}"
