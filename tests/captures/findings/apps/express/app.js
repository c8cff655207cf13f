// Express fixture app: node app.js PORT   (NODE_ENV=production for the production variant)
const express = require('express');
const app = express();
app.use(express.json());

app.get('/api/products/:id', (req, res) => {
  res.json({ id: Number(req.params.id), name: 'Desk lamp', price: 39.5, stock: 12 });
});

function loadConfig(name) {
  const cfg = undefined;
  return cfg[name]; // TypeError
}

app.get('/api/config', (req, res) => {
  res.json({ value: loadConfig('theme') });
});

app.get('/api/render', (req, res, next) => {
  try {
    loadConfig('layout');
  } catch (err) {
    res.status(500).json({ message: err.message, stack: err.stack });
  }
});

app.post('/api/cart', (req, res) => {
  res.status(201).json({ ok: true, items: (req.body.items || []).length });
});

app.listen(Number(process.argv[2]), '127.0.0.1');
