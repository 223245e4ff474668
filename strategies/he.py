"""FedAvg over CKKS ciphertexts (TenSEAL): the server adds encrypted updates it cannot read.

Each client flattens its trained model, multiplies it by its FedAvg weight, encrypts it
under the federation's CKKS context and sends the ciphertexts, with the weight in clear.
The server holds the context without its secret key (:func:`public_copy`): it adds
the ciphertexts, and under DP-FedAvg adds its Gaussian noise to the encrypted sum, then
asks one client of the round, a key holder, to decrypt that one sum (a ``query``
message). It learns the sum and nothing of a single update, as with SecAgg+; unlike
SecAgg+ no quorum of clients is needed to finish a round, and the key holder sees only
sums the server chose to send (so the guarantee assumes no key holder colludes with the
server). NVFlare's HE aggregator uses the same library and the same division of keys.

Only addition happens on ciphertexts (the weights multiply the plaintext before
encryption), so the context needs no multiplicative depth: ``[60, 40, 40, 60]`` bits at
degree 8192 (200 of the 218 bits the HE standard allows for 128-bit security) and
``[60, 40, 40, 40, 40, 60]`` at 16384 (280 of 438), with a scale of ``2**SCALE_BITS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy

from fl_core.options import Settings
from strategies.delegating import DelegatingStrategy

COEFF_BITS = {8192: (60, 40, 40, 60), 16384: (60, 40, 40, 40, 40, 60)}
"""Coefficient moduli per polynomial degree, within the HE standard's 128-bit bounds."""
CIPHER_PREFIX = "he/"
SUM_KEY = "he-sum"
PLAIN_KEY = "he-plain"
DECRYPT_TIMEOUT = 600.0


def make_context(poly_degree: int, scale_bits: int):
    """A fresh CKKS context with its secret key (the key holders')."""
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_degree,
                         coeff_mod_bit_sizes=list(COEFF_BITS[poly_degree]))
    context.global_scale = 2.0 ** scale_bits
    return context


def public_copy(context) -> bytes:
    """The context without its secret key, serialised: what the server may hold."""
    public = context.copy()
    public.make_context_public()
    return public.serialize()


@lru_cache(maxsize=4)
def load_context(path: str):
    """A serialised TenSEAL context from ``path`` (cached per process: clients reuse it)."""
    import tenseal as ts

    return ts.context_from(Path(path).read_bytes())


def flatten(record: ArrayRecord) -> np.ndarray:
    """All arrays of ``record``, in key order, as one float64 vector."""
    return np.concatenate([record[k].numpy().astype(np.float64).ravel() for k in record])


def unflatten(vector: np.ndarray, template: ArrayRecord) -> ArrayRecord:
    """``vector`` cut into ``template``'s keys, shapes and dtypes."""
    out, start = {}, 0
    for key in template:
        like = template[key].numpy()
        out[key] = Array(vector[start:start + like.size].reshape(like.shape).astype(like.dtype))
        start += like.size
    return ArrayRecord(out)


def encrypt(vector: np.ndarray, context, chunk: int) -> ArrayRecord:
    """``vector`` as CKKS ciphertexts of ``chunk`` values each, serialised to bytes."""
    import tenseal as ts

    return packed([ts.ckks_vector(context, vector[start:start + chunk].tolist())
                   for start in range(0, len(vector), chunk)])


def packed(ciphers: Sequence) -> ArrayRecord:
    """Ciphertexts serialised into an ArrayRecord of byte arrays, in order."""
    return ArrayRecord({f"{CIPHER_PREFIX}{i:06d}": Array(
        np.frombuffer(c.serialize(), dtype=np.uint8).copy()) for i, c in enumerate(ciphers)})


def _ciphers(record: ArrayRecord, context) -> list:
    import tenseal as ts

    return [ts.ckks_vector_from(context, record[k].numpy().tobytes()) for k in sorted(record)]


def decrypt(record: ArrayRecord, context) -> np.ndarray:
    """The plaintext of :func:`encrypt`'s ciphertexts (needs the secret key)."""
    return np.concatenate([np.asarray(c.decrypt(), dtype=np.float64)
                           for c in _ciphers(record, context)])


def encrypted_sum(records: Sequence[ArrayRecord], context) -> list:
    """The element-wise sum of several clients' ciphertexts (no secret key needed)."""
    total = _ciphers(records[0], context)
    for record in records[1:]:
        for index, cipher in enumerate(_ciphers(record, context)):
            total[index] = total[index] + cipher
    return total


SECRET_FILE, PUBLIC_FILE = "secret.context", "public.context"
SCALE_BITS = 40
"""CKKS scale 2**40: about 1e-8 absolute error per summed value at these moduli."""


def provision(folder: Path, poly_degree: int) -> None:
    """Write a new federation's keys into ``folder``: the key holders' and the server's.

    The fl_sim CLI does this for each run, as NVFlare's provisioning does for a
    deployment: clients read ``secret.context``, the server only ``public.context``.
    """
    context = make_context(poly_degree, SCALE_BITS)
    (folder / SECRET_FILE).write_bytes(context.serialize(save_secret_key=True))
    (folder / PUBLIC_FILE).write_bytes(public_copy(context))


def keys_folder(settings: Settings) -> Path:
    """The run's key folder.

    Raises
    ------
    ValueError
        If no keys were provisioned (``flwr run .`` starts the apps without the CLI).
    """
    from strategies.options import HEOptions

    folder = settings.get(HEOptions).he_keys
    if not folder or not (Path(folder) / PUBLIC_FILE).exists():
        raise ValueError("--he: no CKKS keys were provisioned for this run; start it with "
                         "`./run.sh` or `python -m fl_sim run`, which make them")
    return Path(folder)


def wrap(strategy: Strategy, settings: Settings, weight_key: str) -> HomomorphicFedAvg:
    """``strategy`` aggregated over ciphertexts with the run's public context."""
    return HomomorphicFedAvg(strategy, (keys_folder(settings) / PUBLIC_FILE).read_bytes(),
                             weight_key)


class HomomorphicFedAvg(DelegatingStrategy):
    """Aggregate ``strategy``'s train replies as an encrypted weighted sum.

    ``strategy`` (FedAvg or FedProx) samples and configures the round and aggregates the
    clear metrics; the model is aggregated here.

    Parameters
    ----------
    strategy : Strategy
        The FedAvg-family strategy whose round this aggregates.
    public_context : bytes
        The serialised context without its secret key (checked).
    weight_key : str
        The reply metric that weighs each client (``num-examples``, or DP-FedAvg's
        uniform weight).
    """

    def __init__(self, strategy: Strategy, public_context: bytes, weight_key: str) -> None:
        import tenseal as ts

        super().__init__(strategy)
        self.context = ts.context_from(public_context)
        if self.context.is_private():
            raise ValueError("the server's HE context holds a secret key; give it the public "
                             "copy (strategies.he.public_copy)")
        self.weight_key = weight_key
        self.noise_std_of_mean = 0.0
        self._rounds: dict[int, tuple[ArrayRecord, Grid]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's messages; keeps the model's layout and the grid."""
        self._rounds[server_round] = (arrays, grid)
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sum the ciphertexts, add the noise encrypted, have one key holder decrypt."""
        template, grid = self._rounds.pop(server_round)
        ok = [r for r in replies if not r.has_error()]
        if not ok:
            return None, None
        weights = [float(r.content["metrics"][self.weight_key]) for r in ok]
        total = sum(weights)
        ciphers = encrypted_sum([r.content["arrays"] for r in ok], self.context)
        if self.noise_std_of_mean > 0:  # on the sum: std x total weight, as Flower's on the mean
            import tenseal as ts

            rng = np.random.default_rng()
            for index, cipher in enumerate(ciphers):
                noise = rng.normal(0.0, self.noise_std_of_mean * total, cipher.size())
                ciphers[index] = cipher + ts.ckks_vector(self.context, noise.tolist())
        plain = self._decrypted(grid, ok, packed(ciphers))
        arrays = unflatten(plain / total, template)
        stand_ins = [Message(RecordDict({"arrays": ArrayRecord({"x": Array(np.zeros(1))}),
                                         "metrics": r.content["metrics"]}), reply_to=r)
                     for r in ok]
        _, metrics = self.strategy.aggregate_train(server_round, stand_ins)
        return arrays, metrics

    @staticmethod
    def _decrypted(grid: Grid, holders: list[Message], summed: ArrayRecord) -> np.ndarray:
        """The sum's plaintext, from the first of the round's clients that answers.

        Raises
        ------
        RuntimeError
            If no client of the round decrypts it.
        """
        reasons = []
        for holder in holders:
            query = Message(RecordDict({SUM_KEY: summed}),
                            dst_node_id=holder.metadata.src_node_id, message_type="query")
            answers = list(grid.send_and_receive([query], timeout=DECRYPT_TIMEOUT))
            if answers and not answers[0].has_error():
                return answers[0].content[PLAIN_KEY]["sum"].numpy().astype(np.float64)
            reasons.append(answers[0].error.reason if answers else "no reply")
        raise RuntimeError(f"no key holder decrypted the sum: {'; '.join(reasons)}")


class EncryptedNoiseClientSideFixedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping whose noise is added to the encrypted sum.

    The inner :class:`HomomorphicFedAvg` adds Gaussian noise of Flower's standard
    deviation (``noise_multiplier * clipping_norm / sampled`` on the mean) before the
    sum is decrypted, so the key holder never sees an un-noised sum; this class adds
    none after, and accounts the round exactly as Flower does.
    """

    def __init__(self, strategy: HomomorphicFedAvg, *args, **kwargs) -> None:
        # Flower accounts fixed clipping only around FedAvg.aggregate_train (a mean of the
        # clipped updates, so the noise calibration holds); the encrypted sum divided by
        # the total weight is that mean, so the FedAvg inside passes the check and the
        # encrypted aggregation then takes its place.
        super().__init__(strategy.strategy, *args, **kwargs)
        self.strategy = strategy
        # Flower's compute_stdv: the noise on the mean of the sampled clients' updates.
        strategy.noise_std_of_mean = (self.noise_multiplier * self.clipping_norm
                                      / self.num_sampled_clients)

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        return aggregated_arrays  # added to the ciphertext sum already
