package dev.torchport.runner;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** The tensor dtypes a bundle may hold, as the manifest names them; raw data is little-endian row-major. */
enum DType {
    FLOAT32("float32", 4, OnnxJavaType.FLOAT),
    FLOAT16("float16", 2, OnnxJavaType.FLOAT16),
    INT64("int64", 8, OnnxJavaType.INT64),
    INT32("int32", 4, OnnxJavaType.INT32),
    UINT8("uint8", 1, OnnxJavaType.UINT8);

    final String name;
    final int itemSize;
    final OnnxJavaType javaType;

    DType(String name, int itemSize, OnnxJavaType javaType) {
        this.name = name;
        this.itemSize = itemSize;
        this.javaType = javaType;
    }

    static DType named(String name) throws Refusal {
        for (DType d : values()) {
            if (d.name.equals(name)) {
                return d;
            }
        }
        throw new Refusal("dtype " + name + " is not supported by this runner");
    }

    static DType of(OnnxJavaType type) {
        for (DType d : values()) {
            if (d.javaType == type) {
                return d;
            }
        }
        throw new IllegalStateException("the model returns a " + type + " tensor, which this runner cannot write");
    }

    /**
     * A tensor over {@code data}, a direct little-endian buffer. ORT uses a direct buffer in native order in place
     * (no copy); on a big-endian host it would copy, converting the values, so the bytes stay correct either way.
     */
    OnnxTensor tensor(OrtEnvironment env, ByteBuffer data, long[] shape) throws OrtException {
        ByteBuffer le = data.slice().order(ByteOrder.LITTLE_ENDIAN);  // slice() forgets the byte order: reset it
        switch (this) {
            case FLOAT32:
                return OnnxTensor.createTensor(env, le.asFloatBuffer(), shape);
            case FLOAT16:
                return OnnxTensor.createTensor(env, le.asShortBuffer(), shape, OnnxJavaType.FLOAT16);
            case INT64:
                return OnnxTensor.createTensor(env, le.asLongBuffer(), shape);
            case INT32:
                return OnnxTensor.createTensor(env, le.asIntBuffer(), shape);
            default:  // UINT8: the plain ByteBuffer overload would make an int8 tensor
                return OnnxTensor.createTensor(env, le, shape, OnnxJavaType.UINT8);
        }
    }

    /** The tensor's values as raw little-endian bytes, whatever the host's byte order. */
    byte[] littleEndianBytes(OnnxTensor tensor) {
        long count = tensor.getInfo().getNumElements();
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(Math.multiplyExact(count, (long) itemSize)))
                .order(ByteOrder.LITTLE_ENDIAN);
        switch (this) {
            case FLOAT32:
                out.asFloatBuffer().put(tensor.getFloatBuffer());
                break;
            case FLOAT16:  // getShortBuffer hands back the raw half-precision bits; getFloatBuffer would widen them
                out.asShortBuffer().put(tensor.getShortBuffer());
                break;
            case INT64:
                out.asLongBuffer().put(tensor.getLongBuffer());
                break;
            case INT32:
                out.asIntBuffer().put(tensor.getIntBuffer());
                break;
            default:
                out.put(tensor.getByteBuffer());
        }
        return out.array();
    }
}
