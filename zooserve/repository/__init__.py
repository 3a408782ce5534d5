"""The model repository on disk, the contract that training, export, library builds and the
server share: where a version's files live, how a version folder is named and numbered, what a
card holds. numpy-free and protocol-free, so every side can import it."""
