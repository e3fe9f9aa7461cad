"""Training across machines with `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's `fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585: its symbolic build reduces the data batch across
the workers). `multi_worker_fit` is the loop that works until that is
fixed: each step runs the model's own `train_step` (Keras' forward pass,
`SOLOv2.compute_loss`, loss scaling, gradients, the optimizer's all-reduced
update) on every replica with `strategy.run`, and reports the losses and
progress through Keras callbacks, as `fit` does. On one machine
(`MirroredStrategy`) or one device it gives `fit`'s update too; there,
`fit` is simpler. See docs/distributed.md.
"""

import keras


def multi_worker_fit(
    model,
    dataset,
    steps_per_epoch,
    epochs=1,
    callbacks=None,
    verbose="auto",
    initial_epoch=0,
):
    """`model.fit` for `tf.distribute` strategies that Keras' `fit` can't run.

    Every worker runs the same call. The model must have been built and
    compiled inside `strategy.scope()`; the strategy is the model's
    (`model.distribute_strategy`). The loss of a step is normalised over the
    global batch (`SOLOv2`'s `loss_normalization="global"`): N workers give
    one device's update on the same global batch.

    Args:
        model: a compiled `keras_solov2.SOLOv2` (any Keras model whose
            `train_step` works under `tf.distribute`).
        dataset: one of
            - a function `input_context -> tf.data.Dataset` that yields
              batches of the per-replica size
              (`input_context.get_per_replica_batch_size(global_batch)`),
              each worker reading its own share (e.g.
              `keras_solov2.data.read_tfrecords(..., input_context=context)`);
              the recommended form;
            - a `tf.data.Dataset` of global batches, which the strategy
              splits (`experimental_distribute_dataset`, auto-sharded by
              file or by data);
            - a dataset the strategy has already distributed.
            It must not run out within `epochs * steps_per_epoch` steps
            (`repeat()` it).
        steps_per_epoch: int. Steps (global batches) per epoch. Required:
            the workers must agree on when an epoch ends.
        epochs: int. Defaults to `1`.
        callbacks: optional list of `keras.callbacks.Callback`. They run on
            every worker (give checkpoint callbacks per-worker paths, or only
            the chief's, as for `fit`).
        verbose: `"auto"`, 0, 1 or 2: Keras' progress bar. Defaults to
            `"auto"` (1).
        initial_epoch: int. Epoch to start from (resuming). Defaults to `0`.

    Returns:
        The `keras.callbacks.History` of the run: per epoch, `loss`,
        `category_loss`, `mask_loss` (the global batch's, averaged over the
        epoch's steps) and `positives_overflow`.

    Example:
    >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()  # TF_CONFIG
    >>> with strategy.scope():
    ...     model = keras_solov2.SOLOv2.from_preset("light_r18_coco")
    ...     model.compile(jit_compile=False)
    >>> def dataset_fn(context):
    ...     return keras_solov2.data.read_tfrecords(
    ...         "train-*", batch_size=context.get_per_replica_batch_size(16),
    ...         canvas=(512, 512), repeat=True, input_context=context)
    >>> multi_worker_fit(model, dataset_fn, steps_per_epoch=7330, epochs=12)
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "multi_worker_fit runs tf.distribute strategies on the TensorFlow "
            f"backend; this is {keras.backend.backend()!r}. On JAX, set a "
            "keras.distribution (DataParallel, ModelParallel) and call fit; see "
            "docs/distributed.md."
        )
    import tensorflow as tf

    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "multi_worker_fit needs a compiled model: call model.compile() inside "
            "strategy.scope() first."
        )
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(
            f"`steps_per_epoch` must be a positive int, got {steps_per_epoch!r}: "
            "the workers must agree on when an epoch ends."
        )
    strategy = model.distribute_strategy
    if callable(dataset) and not isinstance(dataset, tf.data.Dataset):
        distributed = strategy.distribute_datasets_from_function(dataset)
    elif isinstance(dataset, tf.data.Dataset):
        distributed = strategy.experimental_distribute_dataset(dataset)
    else:
        distributed = dataset
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def train_function(iterator):
        strategy.run(model.train_step, args=(next(iterator),))

    verbose = 1 if verbose == "auto" else verbose
    callbacks = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    model.stop_training = False
    iterator = iter(distributed)
    callbacks.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            train_function(iterator)
            # Read in the cross-replica context: the metrics' variables are
            # summed over every replica of every worker.
            logs = {k: float(v) for k, v in model.get_metrics_result().items()}
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return model.history
