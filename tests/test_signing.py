"""Signed versions (zooserve/repository/signing.py) and `zooserve sign`: a signature over every
file of a copy of a zoo model verifies against its public key and against no other; each way a
version is refused says so in one line, naming the files that changed; keys that cannot be
used are one line too, and `zooserve train` / `export` refuse a bad --sign-key before any
TensorFlow work. The served side is tests/test_signing_served.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers.cli import zooserve
from tests.helpers.paths import MODELS
from tests.helpers.signing_keys import (
    make_key_pair,
    make_rsa_key_pair,
    write_encrypted_private_key,
)
from tests.helpers.tampering import swap_model_and_card
from zooserve.repository.layout import (
    LIBRARY_STORE_FOLDER,
    MODEL_FILE,
    SIGNATURE_FILE,
    file_hashes,
    read_card,
    sha256_of_file,
)
from zooserve.repository.signing import (
    KeyRefused,
    SignatureRefused,
    sign_version,
    verify_keys,
    verify_version,
)
from zooserve.serving.repository_files import check_version


@pytest.fixture()
def keys(tmp_path):
    return {"ours": make_key_pair(tmp_path / "keys", "ours"),
            "theirs": make_key_pair(tmp_path / "other-keys", "theirs")}


@pytest.fixture()
def penguins(copy_model, tmp_path) -> Path:
    return copy_model("penguins") / "penguins" / "1"


def signed_list(version: Path) -> dict[str, str]:
    """The files model.sig lists, read straight from its in-toto statement."""
    bundle = json.loads((version / SIGNATURE_FILE).read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {item["name"]: item["digest"] for item in statement["predicate"]["resources"]}


def refusal(version: Path, public_keys: list[Path]) -> str:
    with pytest.raises(SignatureRefused) as caught:
        verify_version(version, public_keys)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_signed_copy_verifies_and_signing_again_lists_the_same_files(penguins, keys):
    written = sign_version(penguins, keys["ours"].private)
    assert written == penguins / SIGNATURE_FILE
    listed = signed_list(penguins)
    # Every file, the card included, by its sha256; the signature itself is not in it.
    assert listed == {**file_hashes(penguins), "card.json": sha256_of_file(penguins / "card.json")}
    public = verify_keys([keys["ours"].public])
    assert verify_version(penguins, public) == keys["ours"].public

    sign_version(penguins, keys["ours"].private)  # again: the old model.sig is not signed
    assert signed_list(penguins) == listed
    assert verify_version(penguins, public) == keys["ours"].public
    # Nothing but model.sig was written, and the card's record of its files still holds.
    assert sorted(p.name for p in penguins.iterdir()) == sorted(
        [*listed, SIGNATURE_FILE])
    assert not [p for p in penguins.parent.iterdir() if p.name.startswith(".")]
    assert SIGNATURE_FILE not in read_card(penguins)["files"]
    check_version(penguins.parent.parent, penguins / MODEL_FILE)


def test_the_key_that_verifies_is_the_one_returned_among_several(penguins, keys):
    sign_version(penguins, keys["theirs"].private)
    both = verify_keys([keys["ours"].public, keys["theirs"].public])
    assert verify_version(penguins, both) == keys["theirs"].public


def test_unsigned(penguins, keys):
    assert refusal(penguins, [keys["ours"].public]) == "unsigned: its folder has no model.sig"


def test_signed_by_another_key(penguins, keys):
    sign_version(penguins, keys["theirs"].private)
    assert refusal(penguins, [keys["ours"].public]) == (
        "signed by none of the given keys ('ours.pem'): its model.sig was made with another "
        "key, or altered after signing")


def test_a_model_changed_after_signing_with_its_card_made_to_match(penguins, keys):
    """What a card alone cannot catch: the card rewritten to vouch for the new file."""
    sign_version(penguins, keys["ours"].private)
    swap_model_and_card(penguins, MODELS / "weather" / "1" / MODEL_FILE)
    check_version(penguins.parent.parent, penguins / MODEL_FILE)  # the card is satisfied
    assert refusal(penguins, [keys["ours"].public]) == (
        "files changed since signing: 'card.json' changed, 'model.onnx' changed")


def test_a_file_added_and_one_removed_after_signing(penguins, keys):
    sign_version(penguins, keys["ours"].private)
    (penguins / "notes\nforged log line.txt").write_text("not signed")
    (penguins / "training_curves.png").unlink()
    assert refusal(penguins, [keys["ours"].public]) == (
        "files changed since signing: 'notes\\nforged log line.txt' added, "
        "'training_curves.png' removed")


def test_many_changes_are_named_up_to_five(penguins, keys):
    sign_version(penguins, keys["ours"].private)
    for number in range(8):
        (penguins / f"extra-{number}.txt").write_text(str(number))
    assert refusal(penguins, [keys["ours"].public]).endswith(
        "'extra-4.txt' added and 3 more")


def test_a_signature_altered_by_hand(penguins, keys):
    sign_version(penguins, keys["ours"].private)
    bundle = json.loads((penguins / SIGNATURE_FILE).read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (penguins / SIGNATURE_FILE).write_text(json.dumps(bundle))
    assert refusal(penguins, [keys["ours"].public]).startswith(
        "signed by none of the given keys ('ours.pem')")
    (penguins / SIGNATURE_FILE).write_text("not json")
    assert refusal(penguins, [keys["ours"].public]).startswith(
        "model.sig is not an OpenSSF model signature")


def test_a_link_in_a_signed_folder(penguins, keys):
    sign_version(penguins, keys["ours"].private)
    (penguins / "elsewhere.png").symlink_to(penguins / "training_curves.png")
    assert refusal(penguins, [keys["ours"].public]) == (
        "its folder cannot be verified: 'elsewhere.png': a symbolic link or a special file; "
        "a signed version holds plain files only")


def test_a_librarys_live_store_is_left_out_and_everything_else_is_signed(copy_model, keys):
    library = copy_model("spectra_search") / "spectra_search" / "1"
    store = library / LIBRARY_STORE_FOLDER
    store.mkdir()
    (store / "collection.sqlite").write_text("before")
    sign_version(library, keys["ours"].private)
    assert not any(name.startswith(LIBRARY_STORE_FOLDER) for name in signed_list(library))
    (store / "collection.sqlite").write_text("changed as Qdrant opens it")
    assert verify_version(library, [keys["ours"].public]) == keys["ours"].public
    (library / "entries.jsonl").write_text("{}\n")
    assert refusal(library, [keys["ours"].public]) == (
        "files changed since signing: 'entries.jsonl' changed")


# -- keys -------------------------------------------------------------------------------------


def test_a_key_folder_gives_its_pem_files(tmp_path, keys):
    folder = keys["ours"].public.parent  # ours.key beside ours.pem: only *.pem are keys
    extra = make_key_pair(folder, "another")
    assert verify_keys([folder]) == sorted([keys["ours"].public, extra.public])
    # The same key named twice counts once.
    assert verify_keys([keys["ours"].public, folder]) == [keys["ours"].public, extra.public]


@pytest.mark.parametrize("case", ["missing", "empty folder", "private key", "RSA key",
                                  "not a key", "P-192 key"])
def test_verification_keys_that_cannot_be_used(tmp_path, keys, case):
    folder = tmp_path / "bad"
    folder.mkdir()
    if case == "missing":
        path, expected = folder / "gone.pem", f"verification key '{folder}/gone.pem' does not exist"
    elif case == "empty folder":
        path, expected = folder, f"key folder '{folder}' holds no *.pem files"
    elif case == "private key":
        path = keys["ours"].private
        expected = (f"verification key '{path}' is a private key: verifying takes the public "
                    "key (the private one stays with whoever signs)")
    elif case == "RSA key":
        path = make_rsa_key_pair(folder, "rsa").public
        expected = (f"verification key '{path}' is not an elliptic-curve key; model signing "
                    "takes EC keys (P-256, P-384, P-521)")
    elif case == "not a key":
        path = folder / "notes.pem"
        path.write_text("hello")
        expected = f"verification key '{path}' is not a PEM public key"
    else:
        path = make_key_pair(folder, "small", ec.SECP192R1()).public
        expected = (f"verification key '{path}' is on curve secp192r1; model signing takes "
                    "P-256, P-384, P-521")
    with pytest.raises(KeyRefused) as caught:
        verify_keys([path])
    assert str(caught.value) == expected


def test_signing_keys_that_cannot_be_used(tmp_path, penguins, keys):
    encrypted = write_encrypted_private_key(tmp_path / "keys", "locked", b"secret")
    cases = {
        keys["ours"].public: "is a public key; signing takes the private key",
        encrypted: "is encrypted; zooserve signs with an unencrypted private key (keep the "
                   "file itself secret)",
        tmp_path / "gone.key": "does not exist",
    }
    for path, said in cases.items():
        with pytest.raises(KeyRefused) as caught:
            sign_version(penguins, path)
        assert str(caught.value) == f"signing key '{path}' {said}"
    assert not (penguins / SIGNATURE_FILE).exists()


# -- zooserve sign -----------------------------------------------------------------------------


def one_error_line(run, command: str = "sign") -> str:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"zooserve {command}: error: ")
    return lines[0].removeprefix(f"zooserve {command}: error: ")


def test_zooserve_sign_signs_the_highest_version_or_the_one_named(copy_model, keys):
    repo = copy_model("penguins")
    copy_model("penguins", as_version=2)
    run = zooserve("sign", "penguins", "--key", str(keys["ours"].private), "--models", str(repo))
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"signed penguins version 2: {repo}/penguins/2/model.sig\n"
    assert not (repo / "penguins" / "1" / SIGNATURE_FILE).exists()
    run = zooserve("sign", "penguins:1", "--key", str(keys["ours"].private),
                   "--models", str(repo))
    assert run.returncode == 0, run.stderr
    for version in ("1", "2"):
        verify_version(repo / "penguins" / version, [keys["ours"].public])


def test_zooserve_sign_refusals_are_one_line(copy_model, keys, tmp_path):
    repo = copy_model("penguins")
    key = str(keys["ours"].private)
    cases = {
        ("nope",): f"no model 'nope' under '{repo}' (no version folder holding model.onnx "
                   "or library.json)",
        ("penguins:7",): f"model 'penguins' has no version 7 under '{repo}'; versions: 1",
        ("penguins:07",): "'07' is not a version: a positive number without a leading zero",
        ("../etc",): "'../etc' is not a valid model name: use ASCII letters, digits, '_', '-' "
                     "and '.', starting with a letter or digit, at most 64 characters",
        ("penguins", str(keys["ours"].public)): f"signing key '{keys['ours'].public}' is a "
                                                "public key; signing takes the private key",
    }
    for (reference, *other_key), said in cases.items():
        run = zooserve("sign", reference, "--key", other_key[0] if other_key else key,
                       "--models", str(repo))
        assert one_error_line(run) == said
    assert not list(repo.rglob(SIGNATURE_FILE))


def test_zooserve_sign_without_the_signing_extra(copy_model, keys, tmp_path):
    """model_signing made unimportable, as in an install without the extra."""
    shadow = tmp_path / "shadow" / "model_signing"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named model_signing')\n")
    repo = copy_model("penguins")
    run = zooserve("sign", "penguins", "--key", str(keys["ours"].private),
                   "--models", str(repo), env={"PYTHONPATH": str(shadow.parent)})
    assert one_error_line(run) == ("signing and verifying models needs the signing extra: "
                                   "pip install 'zooserve[signing]'")


def tensorflow_tripwire(tmp_path: Path) -> dict:
    """An environment in which importing TensorFlow fails loudly: a command that refuses
    before its TensorFlow work never trips it."""
    package = tmp_path / "tripwire" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import sys\nsys.stderr.write('TENSORFLOW IMPORTED\\n')\nsys.exit(99)\n")
    return {"PYTHONPATH": str(package.parent)}


def test_train_and_export_refuse_a_bad_sign_key_before_tensorflow(tmp_path, keys):
    models, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    tripwire = tensorflow_tripwire(tmp_path)
    public = str(keys["ours"].public)
    said = f"signing key '{public}' is a public key; signing takes the private key"

    run = zooserve("train", "penguins", "--models", str(models), "--ledger", str(ledger),
                   "--sign-key", public, env=tripwire)
    assert (run.returncode, run.stderr) == (2, f"error: --sign-key: {said}\n")

    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\x03\x04 a zip archive, as far as the format check goes")
    run = zooserve("export", str(keras_file), "--name", "mine", "--models", str(models),
                   "--ledger", str(ledger), "--sign-key", public, env=tripwire)
    assert one_error_line(run, "export") == f"--sign-key: {said}"
    assert not models.exists() and not ledger.exists()


def test_export_sign_key_publishes_a_signed_version(tmp_path, keys):
    """A real export (TensorFlow and tf2onnx: about 12 s) with --sign-key: the version is
    signed from its first moment, and verifies."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    from tests.helpers.own_keras_models import build_classifier, penguin_like

    x, _ = penguin_like(64, seed=1)
    source = tmp_path / "mine.keras"
    build_classifier(keras, x).save(source)
    models = tmp_path / "models"
    run = zooserve("export", str(source), "--name", "mine", "--models", str(models),
                   "--ledger", str(tmp_path / "ledger.csv"),
                   "--sign-key", str(keys["ours"].private), timeout=300)
    assert run.returncode == 0, run.stderr
    version = models / "mine" / "1"
    assert verify_version(version, [keys["ours"].public]) == keys["ours"].public
    assert set(signed_list(version)) == {*read_card(version)["files"], "card.json"}
