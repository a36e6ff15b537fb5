// The page's own test worker (isolated.js): writes 1 into the first word of the shared memory it is sent.
addEventListener('message', (event) => {
  Atomics.store(new Int32Array(event.data.buffer), 0, 1);
  postMessage('written');
});
