// A `.wasm` import is a compiled WebAssembly.Module where modules are imported that way (workerd).
declare module '*.wasm' {
  const module: WebAssembly.Module;
  export default module;
}
