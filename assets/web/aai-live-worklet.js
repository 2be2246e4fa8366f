// aai-live-worklet.js — the audio thread's part of aai-live-client.js: downmix every render
// quantum to mono and hand blocks of frames to the page, each stamped with the index of its
// first frame, so the page can tell when frames went missing (a capture overrun). Resampling
// and chunking happen on the page (aai-live-client.js), where they are unit-tested.

/** Frames per message: about 21 ms at 48 kHz, few enough messages, little added latency. */
const BLOCK = 1024;

class AaiLiveCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK);
    this.fill = 0;
    this.first = null; // frame index of block[0]
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      if (this.fill === 0) this.first = currentFrame + i;
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.block[this.fill++] = sum / channels.length;
      if (this.fill === BLOCK) {
        this.port.postMessage({ frame: this.first, samples: this.block }, [this.block.buffer]);
        this.block = new Float32Array(BLOCK);
        this.fill = 0;
      }
    }
    return true;
  }
}

registerProcessor("aai-live-capture", AaiLiveCapture);
