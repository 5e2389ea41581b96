// WebRTC for the portal: local devices, the meeting connection (own audio/video plus receive
// slots for the others, as the media service expects), the echo test room, frame counting and
// the connection-quality check.
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
  async function connect(stream, negotiate, onTrack) {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    for (let i = 0; i < SLOTS; i++) {
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    pc.addEventListener("track", e => onTrack(e.track, e.transceiver));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const answer = await negotiate(pc.localDescription.sdp);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    return pc;
  }

  async function testRoom(stream, negotiate, onTrack) {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] });
    pc.addEventListener("track", e => onTrack(e.track, e.transceiver));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    await pc.setRemoteDescription({ type: "answer", sdp: await negotiate(pc.localDescription.sdp) });
    return pc;
  }

  // Round-trip time and packet loss from the browser's own statistics; poor when RTT > 300 ms or loss > 5 %.
  function watchQuality(pc, onChange) {
    let last = { lost: 0, received: 0 };
    const timer = setInterval(async () => {
      if (pc.connectionState === "closed") { clearInterval(timer); return; }
      let rtt = 0, lost = 0, received = 0;
      const stats = await pc.getStats();
      stats.forEach(s => {
        if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime) rtt = s.currentRoundTripTime;
        if (s.type === "inbound-rtp") { lost += s.packetsLost || 0; received += s.packetsReceived || 0; }
      });
      const dl = lost - last.lost, dr = received - last.received;
      last = { lost, received };
      const loss = dl + dr > 0 ? dl / (dl + dr) : 0;
      onChange({ rtt, loss, poor: rtt > 0.3 || loss > 0.05 });
    }, 2000);
    return () => clearInterval(timer);
  }

  return { localStream, devices, connect, testRoom, countFrames, watchQuality };
})();
