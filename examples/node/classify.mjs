#!/usr/bin/env node
// Classify blood-smear images with a leukedge model from Node.js: no Python, no preprocessing.
//
//   npm install
//   node classify.mjs [--model MODEL.onnx] IMAGE...
//
// A leukedge model is one ONNX file that takes the decoded RGB pixels (uint8 [N, H, W, 3], any
// size) and does the rest itself: resize, normalisation, stain mask, calibrated softmax and the
// input checks. Its contract (class names, review threshold, check limits) is JSON in the file's
// metadata under "leukedge.contract"; this script reads it with a few lines of protobuf decoding.
// One JSON line per image: path, label, confidence, probabilities, needs_review, review_reasons,
// and, when the model has that output, heatmap: {height, width, values} (row-major, [0, 1]:
// where the network saw the predicted class, at its last feature resolution; scale it to the
// image to draw it); error for a file that cannot be used.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import jpeg from "jpeg-js";
import ort from "onnxruntime-node";
import pngjs from "pngjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODELS = path.join(HERE, "..", "..", "runtime", "assets", "models");

// ONNX Runtime's INT8 kernels are exact on x86 CPUs with VNNI; on x86 CPUs without it (AVX2)
// the -int8-avx2 file is, where bundled (7-bit weights where those kernels pair products in
// 16 bits); where the CPU's features cannot be read the FP32 file is the one known to be exact.
// The same choice as leukedge's Python runtime (runtime/models.py).
export function hasInt8Vnni(cpuinfo = "/proc/cpuinfo") {
  try {
    const flags = fs.readFileSync(cpuinfo, "utf8").split("\n").find((l) => l.startsWith("flags"));
    if (!flags) return null;
    return /\b(avx512_vnni|avx_vnni|amx_int8)\b/.test(flags);
  } catch {
    return null; // not Linux: unknown
  }
}

export function defaultModel(vnni = hasInt8Vnni(), arch = process.arch, models = MODELS) {
  const file = (precision) => path.join(models, `leukedge-default-${precision}.onnx`);
  if (vnni === true) return file("int8");
  const x86 = arch === "x64" || arch === "ia32";
  if (vnni === false && x86 && fs.existsSync(file("int8-avx2"))) return file("int8-avx2");
  return file("fp32");
}
const DECIMALS = 1e6; // leukedge reports and compares confidences at 6 decimals

// ------------------------------------------------------------------ the contract (protobuf)

function readVarint(buf, pos) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    const byte = buf[pos++];
    value |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return [value, pos];
    shift += 7n;
  }
}

// Fields of a protobuf message: [{field, wire, value}] where value is a Buffer for wire type 2.
function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) { [, pos] = readVarint(buf, pos); continue; }
    if (wire === 1) { pos += 8; continue; }
    if (wire === 5) { pos += 4; continue; }
    if (wire !== 2) throw new Error(`unsupported protobuf wire type ${wire}`);
    let len;
    [len, pos] = readVarint(buf, pos);
    const end = pos + Number(len);
    yield { field, wire, value: buf.subarray(pos, end) };
    pos = end;
  }
}

// ModelProto.metadata_props is field 14: StringStringEntryProto { key = 1; value = 2; }.
export function readContract(modelBytes) {
  for (const { field, value } of fields(modelBytes)) {
    if (field !== 14) continue;
    const entry = {};
    for (const f of fields(value)) entry[f.field] = f.value.toString("utf8");
    if (entry[1] === "leukedge.contract") return JSON.parse(entry[2]);
  }
  throw new Error("not a leukedge model: no 'leukedge.contract' in its metadata");
}

// ------------------------------------------------------------------ decoding

function jpegOrientation(buf) {
  // EXIF orientation (1-8) from an APP1 segment, 1 when absent.
  let pos = 2;
  while (pos + 4 <= buf.length && buf[pos] === 0xff) {
    const marker = buf[pos + 1];
    const length = buf.readUInt16BE(pos + 2);
    if (marker === 0xda) break;
    if (marker === 0xe1 && buf.toString("latin1", pos + 4, pos + 10) === "Exif\0\0") {
      const base = pos + 10;
      const little = buf.toString("latin1", base, base + 2) === "II";
      const u16 = (o) => (little ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
      const u32 = (o) => (little ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
      const ifd = base + u32(base + 4);
      for (let i = 0; i < u16(ifd); i++) {
        const entry = ifd + 2 + 12 * i;
        if (u16(entry) === 0x0112) return u16(entry + 8);
      }
    }
    pos += 2 + length;
  }
  return 1;
}

function orient(rgb, width, height, orientation) {
  // The stored pixels -> the image a viewer shows (EXIF orientations 1-8).
  const swap = orientation >= 5;
  const w = swap ? height : width;
  const h = swap ? width : height;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let sx, sy;
      switch (orientation) {
        case 2: sx = width - 1 - x; sy = y; break;
        case 3: sx = width - 1 - x; sy = height - 1 - y; break;
        case 4: sx = x; sy = height - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = height - 1 - x; break;
        case 7: sx = width - 1 - y; sy = height - 1 - x; break;
        case 8: sx = width - 1 - y; sy = x; break;
        default: sx = x; sy = y;
      }
      out.set(rgb.subarray((sy * width + sx) * 3, (sy * width + sx) * 3 + 3), (y * w + x) * 3);
    }
  }
  return { data: out, width: w, height: h };
}

export function decode(file) {
  const buf = fs.readFileSync(file);
  if (buf.length === 0) throw new Error("empty file (0 bytes)");
  if (buf[0] === 0xff && buf[1] === 0xd8) {
    const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 512 });
    const o = jpegOrientation(buf);
    return o === 1 ? img : orient(img.data, img.width, img.height, o);
  }
  if (buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    const png = pngjs.PNG.sync.read(buf);
    if (png.depth !== 8 || !(png.colorType & 2)) throw new Error("not an 8-bit colour PNG");
    const rgb = new Uint8Array(png.width * png.height * 3);
    for (let i = 0, j = 0; i < png.data.length; i += 4, j += 3) {
      rgb[j] = png.data[i]; rgb[j + 1] = png.data[i + 1]; rgb[j + 2] = png.data[i + 2];
    }
    return { data: rgb, width: png.width, height: png.height };
  }
  throw new Error("not a JPEG or PNG file (this example reads those two)");
}

// ------------------------------------------------------------------ classifying

function reviewReasons(contract, confidence, outputs) {
  // The same codes and messages as leukedge's rows; contract schema 2 called the limits "sanity".
  const reasons = [];
  const reason = (code, message) => reasons.push({ code, message });
  if (!(confidence >= contract.review_below)) {
    reason("low_confidence", `low confidence (${confidence.toFixed(3)} < ${contract.review_below})`);
  }
  const s = contract.input_checks || contract.sanity || {};
  if (!(outputs.contrast >= (s.min_contrast || 0))) reason("blank", "blank or flat image");
  if (!(outputs.stain_coverage >= (s.min_stain_coverage || 0))) {
    reason("no_stain", "no stained cells found");
  }
  if (s.max_ood_score != null && outputs.ood_score !== undefined &&
      !(outputs.ood_score <= s.max_ood_score)) reason("unlike_training", "unlike the training images");
  return reasons;
}

export async function classify(modelPath, files) {
  const contract = readContract(fs.readFileSync(modelPath));
  const session = await ort.InferenceSession.create(modelPath);
  const wanted = contract.outputs.map((o) => o.name).filter((n) => n !== "stain_mask");
  const maps = new Set(["heatmap"]); // [1, h, w] maps, not one number per image
  const rows = [];
  for (const file of files) {
    let img;
    try {
      img = decode(file);
    } catch (err) {
      rows.push({ path: file, error: `${file}: ${err.message}`, needs_review: true });
      continue;
    }
    const pixels = new ort.Tensor("uint8", img.data, [1, img.height, img.width, 3]);
    const result = await session.run({ image: pixels }, wanted);
    const probs = Array.from(result.probs.data, (p) => Math.round(p * DECIMALS) / DECIMALS);
    const best = probs.indexOf(Math.max(...probs));
    const scalar = Object.fromEntries(wanted.filter((n) => n !== "probs" && !maps.has(n))
      .map((n) => [n, result[n].data[0]]));
    const reasons = reviewReasons(contract, probs[best], scalar);
    const row = {
      path: file,
      label: contract.classes[best],
      confidence: probs[best],
      probabilities: Object.fromEntries(contract.classes.map((c, i) => [c, probs[i]])),
      needs_review: reasons.length > 0,
      review_reasons: reasons,
    };
    if (result.heatmap) {
      const [, height, width] = result.heatmap.dims;
      row.heatmap = { height, width,
        values: Array.from(result.heatmap.data, (v) => Math.round(v * DECIMALS) / DECIMALS) };
    }
    rows.push(row);
  }
  return rows;
}

async function main(argv) {
  let model = defaultModel();
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--model" || argv[i] === "-m") model = argv[++i];
    else files.push(argv[i]);
  }
  if (!files.length) {
    console.error("usage: node classify.mjs [--model MODEL.onnx] IMAGE...");
    return 2;
  }
  const rows = await classify(model, files);
  for (const row of rows) console.log(JSON.stringify(row));
  return rows.some((r) => r.error) ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => {
    console.error(`Error: ${err.message}`);
    process.exitCode = 2;
  });
}
