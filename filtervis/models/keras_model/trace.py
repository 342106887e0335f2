"""
A Keras model run layer by layer, so that every layer's output is seen: the
model's own graph walk, entered into nested models, with each call recorded
as (layer, scope, inputs, outputs). freeze.py traces it inside a tf.function
and units.py picks the units from the recorded calls.

    from filtervis.models.keras_model import trace
    calls = []
    outputs = trace.run_model(model, x, calls, keras, tf2)   # inside tf2_mode() and a tf.function
    layers = list(trace.flat_layers(model, keras))         # model.layers, nested models entered

Keras and TensorFlow's v2 API are passed in, never imported here: only a
build needs them.
"""

import inspect


def is_graph_model(layer, keras):
    """True for a Functional or Sequential model, whose layers the walk enters."""
    if isinstance(layer, keras.Sequential):
        return True
    return isinstance(layer, keras.Model) and hasattr(layer, '_run_through_graph') and hasattr(layer, '_nodes_by_depth')


def flat_layers(model, keras):
    """Every layer of model, nested models entered (and listed after their layers)."""
    for layer in model.layers:
        if is_graph_model(layer, keras):
            yield from flat_layers(layer, keras)
        yield layer


def run_model(model, inputs, calls, keras, tf2, scope=()):
    """model's outputs on inputs, layer by layer in inference mode; each call is appended to `calls`.

    Runs the model's own graph walk (Functional._run_through_graph, what
    Functional.call uses), entering nested models so that their layers'
    outputs are seen, and records (layer, scope, inputs, outputs) per call:
    scope is the tuple of model names around the layer, inputs and outputs
    flat lists of tensors.
    """
    if isinstance(model, keras.Sequential) and getattr(model, '_functional', None) is None:
        x = inputs
        for layer in model.layers:
            x = _call_layer(layer, [x], {}, calls, keras, tf2, scope + (model.name,))
        return x
    graph_model = model._functional if isinstance(model, keras.Sequential) else model
    inputs = graph_model._standardize_inputs(inputs)

    def operation_fn(layer):
        return lambda *args, **kwargs: _call_layer(layer, args, kwargs, calls, keras, tf2, scope + (model.name,))

    outputs = graph_model._run_through_graph(inputs, operation_fn=operation_fn)
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def _call_layer(layer, args, kwargs, calls, keras, tf2, scope):
    if is_graph_model(layer, keras):
        x = args[0] if len(args) == 1 else list(args)
        outputs = run_model(layer, x, calls, keras, tf2, scope)
    elif (_dilation(layer) > 1 and type(layer).__name__ in ('Conv2D', 'DepthwiseConv2D', 'SeparableConv2D')
          or type(layer).__name__ == 'Conv2D' and getattr(layer, 'groups', 1) > 1):
        outputs = _plain_conv(layer, args[0], tf2)
    else:
        if 'training' in inspect.signature(layer.call).parameters:
            kwargs = dict(kwargs, training=False)
        outputs = layer(*args, **kwargs)
    flat_inputs = [t for t in tf2.nest.flatten((args, kwargs)) if tf2.is_tensor(t)]
    calls.append((layer, scope, flat_inputs, tf2.nest.flatten(outputs)))
    return outputs


def _dilation(layer):
    rate = getattr(layer, 'dilation_rate', 1)
    return max(rate) if isinstance(rate, (tuple, list)) else rate


def _plain_conv(layer, x, tf2):
    """A dilated Conv2D, DepthwiseConv2D or SeparableConv2D, or a grouped Conv2D, as plain conv ops.

    Keras computes dilated convolutions through SpaceToBatchND and
    BatchToSpaceND, which moves pixels in a way geometry.py does not follow
    and bfloat16 cannot run; the Conv2D op with dilations gives the same
    values. A depthwise kernel becomes a block-diagonal Conv2D kernel, because
    the CPU gradient of DepthwiseConv2dNative with dilations is wrong.
    Keras runs a grouped Conv2D (ConvNeXt's depthwise 7x7) as an XLA function
    call, which a frozen graph keeps opaque: here it is a depthwise conv when
    each group is one input channel, else one Conv2D per group, concatenated.
    """
    kind = type(layer).__name__
    strides = [1] + list(layer.strides) + [1]
    dilations = [1] + list(layer.dilation_rate) + [1]
    padding = layer.padding.upper()

    def depthwise_as_conv(kernel):
        k_h, k_w, channels, multiplier = kernel.shape.as_list()
        eye = tf2.eye(channels, dtype=kernel.dtype)                                 # [C, C]
        full = kernel[:, :, :, None, :] * eye[None, None, :, :, None]              # [kh, kw, C, C, m]
        return tf2.reshape(full, [k_h, k_w, channels, channels * multiplier])

    if kind == 'Conv2D':
        kernel, groups = tf2.convert_to_tensor(layer.kernel), getattr(layer, 'groups', 1)
        k_h, k_w, per_group, out = kernel.shape.as_list()           # [kh, kw, C / groups, out]
        if groups > 1 and per_group == 1 and max(dilations) == 1:
            # Output channel g*m + j of group g is depthwise channel g, multiplier j.
            y = tf2.nn.depthwise_conv2d(x, tf2.reshape(kernel, [k_h, k_w, groups, out // groups]), strides, padding)
        elif groups > 1:
            parts = zip(tf2.split(x, groups, axis=3), tf2.split(kernel, groups, axis=3))
            y = tf2.concat([tf2.nn.conv2d(part, weights, strides, padding, dilations=dilations)
                            for part, weights in parts], axis=3)
        else:
            y = tf2.nn.conv2d(x, kernel, strides, padding, dilations=dilations)
    elif kind == 'DepthwiseConv2D':
        y = tf2.nn.conv2d(x, depthwise_as_conv(tf2.convert_to_tensor(layer.kernel)), strides, padding,
                          dilations=dilations)
    else:
        y = tf2.nn.conv2d(x, depthwise_as_conv(tf2.convert_to_tensor(layer.depthwise_kernel)), strides, padding,
                          dilations=dilations)
        y = tf2.nn.conv2d(y, tf2.convert_to_tensor(layer.pointwise_kernel), 1, 'VALID')
    if layer.use_bias:
        y = tf2.nn.bias_add(y, tf2.convert_to_tensor(layer.bias))
    return layer.activation(y) if layer.activation is not None else y
