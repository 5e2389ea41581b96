// WebRTC for the portal: local devices, the meeting connection (own audio/video plus receive
// slots for the others, as the media service expects), the echo test room, and frame counting.
"use strict";
const Media = (() => {
  const SLOTS = 8;  // how many others a participant can see

  async function localStream(cameraId, micId) {
    return navigator.mediaDevices.getUserMedia({
      video: cameraId ? { deviceId: { exact: cameraId } } : { width: 640, height: 480 },
      audio: micId ? { deviceId: { exact: micId } } : true,
    });
  }

  async function devices() {
    const all = await navigator.mediaDevices.enumerateDevices();
    return { cameras: all.filter(d => d.kind === "videoinput"), mics: all.filter(d => d.kind === "audioinput") };
  }

  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(resolve => {
      const t = setTimeout(resolve, ms || 3000);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
  }

  // Count decoded frames on a <video>; the count is kept in data-frames (also read by tests).
  function countFrames(video) {
    video.dataset.frames = "0";
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const step = () => {
      video.dataset.frames = String(Number(video.dataset.frames) + 1);
      video.requestVideoFrameCallback(step);
    };
    video.requestVideoFrameCallback(step);
  }

  // Offer own tracks send-only and SLOTS receive-only audio+video pairs; answer comes from `negotiate`.
  // TURN for networks that block direct media (empty when none is configured).
  async function iceServers() {
    try { return (await SVPL.api("GET", "/ice-servers")).ice_servers; } catch (err) { return []; }
  }

  async function connect(stream, negotiate, onTrack) {
    const pc = new RTCPeerConnection({ iceServers: await iceServers(), bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    for (let i = 0; i < SLOTS; i++) {
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    pc.addEventListener("track", e => onTrack(e.track, e.transceiver));
    return offerAnswer(pc, negotiate);
  }

  // A failed negotiation closes its peer connection (a retry makes a new one; none is left open).
  async function offerAnswer(pc, negotiate) {
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      await pc.setRemoteDescription({ type: "answer", sdp: await negotiate(pc.localDescription.sdp) });
      return pc;
    } catch (err) { pc.close(); throw err; }
  }

  async function testRoom(stream, negotiate, onTrack) {
    const pc = new RTCPeerConnection({ iceServers: await iceServers(), bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] });
    pc.addEventListener("track", e => onTrack(e.track, e.transceiver));
    return offerAnswer(pc, negotiate);
  }

  // How loud a stream's audio has been since the last read, 0..1: the loudest RMS of any 1024 samples
  // (about 21 ms) in the analyser's last 16384 (about 340 ms), for the who-is-speaking marks (read every
  // 250 ms) and the test room's level meter. The window is longer than the time between reads, so a short
  // sound between two reads is never missed: with a window shorter than the reads (it was 85 ms) a short
  // word could fall between them every time, and a sound repeating in step with the reads (Chromium's fake
  // microphone beeps 20 ms twice a second) stayed unseen for a whole meeting. One AudioContext for the page;
  // the analyser is dropped with the stream.
  // A browser may start the context suspended, or suspend it later (a phone's browser without a tap
  // yet, a page the system put to sleep): each read and the next tap or key press ask it to resume,
  // so the marks never stay dark for the whole meeting.
  const LEVEL_WINDOW = 16384, LEVEL_CHUNK = 1024;
  let audioContext = null;
  function resumeAudio() {
    if (audioContext && audioContext.state === "suspended") audioContext.resume().catch(() => {});
  }
  for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, resumeAudio, { capture: true, passive: true });
  function level(stream) {
    if (!stream.getAudioTracks().length) return () => 0;
    audioContext = audioContext || new AudioContext();
    resumeAudio();
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = LEVEL_WINDOW;
    audioContext.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    return () => {
      resumeAudio();
      analyser.getFloatTimeDomainData(samples);
      let loudest = 0;
      for (let start = 0; start < samples.length; start += LEVEL_CHUNK) {
        let sum = 0;
        for (let i = start; i < start + LEVEL_CHUNK; i++) sum += samples[i] * samples[i];
        loudest = Math.max(loudest, sum);
      }
      return Math.sqrt(loudest / LEVEL_CHUNK);
    };
  }

  // The connection's round-trip time, loss and received bitrate, and what they mean in words
  // ("bra" / "svag"), from the peer connection's own statistics (two samples `ms` apart).
  async function connectionResult(pc, ms) {
    const sample = async () => {
      let rtt = null, lost = 0, received = 0, bytes = 0;
      (await pc.getStats()).forEach(s => {
        if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
        if (s.type === "inbound-rtp") { lost += s.packetsLost || 0; received += s.packetsReceived || 0; bytes += s.bytesReceived || 0; }
      });
      return { rtt, lost, received, bytes, at: performance.now() };
    };
    const first = await sample();
    await new Promise(r => setTimeout(r, ms || 2000));
    const last = await sample();
    const packets = (last.received - first.received) + (last.lost - first.lost);
    const loss = packets > 0 ? Math.max(0, last.lost - first.lost) / packets : 0;
    const kbps = (last.bytes - first.bytes) * 8 / Math.max(1, last.at - first.at);
    const rttMs = last.rtt === null ? null : Math.round(last.rtt * 1000);
    const good = (rttMs === null || rttMs < 300) && loss < 0.03 && kbps > 150;
    return { rttMs, loss, kbps: Math.round(kbps), good };
  }

  return { localStream, devices, connect, testRoom, countFrames, level, connectionResult };
})();
